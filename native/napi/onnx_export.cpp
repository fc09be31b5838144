// N-API: exportOnnx(options) -> Promise<string manifest JSON>. The ONNX exporter's only binding
// (native/engine/onnx/export.h; lib/onnx/export.ts types and validates the options). Runs on a worker
// thread; an xpsr::Error rejects with its `.code`.
#include <napi.h>

#include <functional>

#include "engine/onnx/export.h"
#include "engine/onnx/load.h"
#include "engine/onnx/profile.h"

using namespace xpsr;

namespace {

// Runs `job` on a worker thread; resolves with the string it returns.
class StringWorker : public Napi::AsyncWorker {
 public:
  StringWorker(Napi::Env env, std::function<std::string()> job)
      : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), job_(std::move(job)) {}
  Napi::Promise::Deferred deferred;

 private:
  void Execute() override {
    try {
      manifest = job_();
    } catch (const Error& e) {
      code = e.code_name();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code = "ERR_OUT_OF_MEMORY";
      SetError("out of host memory during ONNX export");
    } catch (const std::exception& e) {
      code = "ERR_INTERNAL";
      SetError(std::string("internal error: ") + e.what());
    }
  }
  void OnOK() override { deferred.Resolve(Napi::String::New(Env(), manifest)); }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code.empty() ? "ERR_INTERNAL" : code));
    deferred.Reject(err.Value());
  }
  std::function<std::string()> job_;
  std::string manifest, code;
};

std::string get_str(const Napi::Object& o, const char* k, const std::string& def = "") {
  return o.Has(k) && o.Get(k).IsString() ? o.Get(k).As<Napi::String>().Utf8Value() : def;
}
bool get_bool(const Napi::Object& o, const char* k, bool def = false) {
  return o.Has(k) && o.Get(k).IsBoolean() ? o.Get(k).As<Napi::Boolean>().Value() : def;
}
int get_int(const Napi::Object& o, const char* k, int def) {
  return o.Has(k) && o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().Int32Value() : def;
}

onnx::ComponentSource component(const Napi::Object& o, const char* k) {
  onnx::ComponentSource c;
  if (!o.Has(k) || !o.Get(k).IsObject()) return c;
  Napi::Object s = o.Get(k).As<Napi::Object>();
  c.path = get_str(s, "path");
  c.config_json = get_str(s, "configJson");
  c.variant = get_str(s, "variant");
  c.synthetic = get_bool(s, "synthetic");
  if (s.Has("seed") && s.Get("seed").IsNumber()) c.seed = (uint64_t)s.Get("seed").As<Napi::Number>().Int64Value();
  return c;
}

}  // namespace

// exportOnnx({ components: { textEncoder, vae, unet, controlnet: { path } | { configJson, synthetic, seed } },
//              out, parts?, sizes?: [[w, h], ...], batch?, textBatch?, vaeBatch?, seqLen?, dynamicBatch?, fp16?,
//              layout?: 'nchw' | 'nhwc', external?: 'auto' | 'always' | 'never', intermediates?, residualOutputs?,
//              producerVersion? })
Napi::Value ExportOnnx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::Error e = Napi::Error::New(env, "exportOnnx(options) needs an options object");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARGUMENT"));
    throw e;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  onnx::ExportSources src;
  if (o.Has("components") && o.Get("components").IsObject()) {
    Napi::Object c = o.Get("components").As<Napi::Object>();
    src.text_encoder = component(c, "textEncoder");
    src.vae = component(c, "vae");
    src.unet = component(c, "unet");
    src.controlnet = component(c, "controlnet");
  }
  onnx::ExportOptions opts;
  opts.out_dir = get_str(o, "out");
  if (o.Has("parts") && o.Get("parts").IsArray()) {
    Napi::Array a = o.Get("parts").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) opts.parts.push_back(a.Get(i).ToString().Utf8Value());
  }
  if (o.Has("sizes") && o.Get("sizes").IsArray()) {
    opts.sizes.clear();
    Napi::Array a = o.Get("sizes").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (!a.Get(i).IsArray() || a.Get(i).As<Napi::Array>().Length() != 2) {
        Napi::Error e = Napi::Error::New(env, "exportOnnx: sizes must be [width, height] pairs");
        e.Set("code", Napi::String::New(env, "ERR_INVALID_ARGUMENT"));
        throw e;
      }
      Napi::Array wh = a.Get(i).As<Napi::Array>();
      opts.sizes.push_back({wh.Get(0u).ToNumber().Int32Value(), wh.Get(1u).ToNumber().Int32Value()});
    }
  }
  opts.batch = get_int(o, "batch", 2);
  opts.text_batch = get_int(o, "textBatch", 1);
  opts.vae_batch = get_int(o, "vaeBatch", 1);
  opts.seq_len = get_int(o, "seqLen", 77);
  opts.dynamic_batch = get_bool(o, "dynamicBatch");
  opts.fp16 = get_bool(o, "fp16");
  opts.layout = get_str(o, "layout", "nchw") == "nhwc" ? onnx::Layout::CL : onnx::Layout::CF;
  std::string ext = get_str(o, "external", "auto");
  opts.external = ext == "always"  ? onnx::ExportOptions::External::Always
                  : ext == "never" ? onnx::ExportOptions::External::Never
                                   : onnx::ExportOptions::External::Auto;
  opts.intermediates = get_bool(o, "intermediates");
  opts.residual_outputs = get_bool(o, "residualOutputs");
  opts.producer_version = get_str(o, "producerVersion");
  auto* w = new StringWorker(env, [src, opts]() {
    onnx::ExportSession session(src, opts.parts);
    return onnx::export_models(session.backend(), session.models(), opts);
  });
  Napi::Promise p = w->deferred.Promise();
  w->Queue();
  return p;
}

// profileOnnxStep({ components: { unet, controlnet }, size: [w, h], batch?, seqLen?, threads?, reps? })
//   -> Promise<string JSON> (native/engine/onnx/profile.h): the exported step graph on the CPU backend, timed per op.
Napi::Value ProfileOnnxStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::Error e = Napi::Error::New(env, "profileOnnxStep(options) needs an options object");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARGUMENT"));
    throw e;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  onnx::ExportSources src;
  if (o.Has("components") && o.Get("components").IsObject()) {
    Napi::Object c = o.Get("components").As<Napi::Object>();
    src.unet = component(c, "unet");
    src.controlnet = component(c, "controlnet");
  }
  int w = 512, h = 512;
  if (o.Has("size") && o.Get("size").IsArray()) {
    Napi::Array a = o.Get("size").As<Napi::Array>();
    w = a.Get(0u).ToNumber().Int32Value(), h = a.Get(1u).ToNumber().Int32Value();
  }
  int batch = get_int(o, "batch", 2), seq = get_int(o, "seqLen", 77), threads = get_int(o, "threads", 0),
      reps = get_int(o, "reps", 1);
  auto* wk = new StringWorker(env, [=]() { return onnx::profile_step_cpu(src, w, h, batch, seq, threads, reps); });
  Napi::Promise p = wk->deferred.Promise();
  wk->Queue();
  return p;
}
