// N-API binding: a thin layer that turns JS values into typed engine requests and back (lib/native.ts
// mirrors it one to one).
//   NativeEngine  one engine (backend + models + plans): one Promise-returning method per engine entry
//                 (textEncode, vaeEncode, vaeDecode, vaeEncodeTiled, vaeDecodeTiled, condEmbedding,
//                 controlnetForward, unetForward, step), planStep, load; unload / clearPlans / plans return
//                 at once (the engine defers what must wait for a running call)
//   CancelFlag    an atomic flag a call polls between ops (fed from an AbortSignal in lib/)
//   systemInfo(), listDevices(); inspectWeights(), findWeightFiles() (weights_info.cpp)
// JS values are copied into plain C++ structs on the main thread; workers never touch N-API. Every
// method body is guarded: a C++ exception becomes a JS error with `.code` (xpsr::Error's code,
// ERR_OUT_OF_MEMORY, ERR_INTERNAL); nothing reaches std::terminate. State is per environment (instance
// data), so the addon can be loaded in several worker_threads at once.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "engine/engine.h"
#include "engine/system.h"

using namespace xpsr;

Napi::Value ExportOnnx(const Napi::CallbackInfo& info);           // onnx_export.cpp (ONNX export)
Napi::Value ProfileOnnxStep(const Napi::CallbackInfo& info);      // onnx_export.cpp (ONNX CPU benchmark)
void register_weights_info(Napi::Env env, Napi::Object exports);  // weights_info.cpp

namespace {

Napi::Error coded(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// Runs a method body; any C++ exception leaves as a coded JS exception.
template <class F>
auto guarded(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const xpsr::Error& e) {
    throw coded(env, e.code_name(), e.what());
  } catch (const std::bad_alloc&) {
    throw coded(env, "ERR_OUT_OF_MEMORY", "out of host memory");
  } catch (const std::exception& e) {
    throw coded(env, "ERR_INTERNAL", std::string("internal error: ") + e.what());
  } catch (...) {
    throw coded(env, "ERR_INTERNAL", "internal error (unknown exception)");
  }
}

// ---- per-environment data -----------------------------------------------------------------------------

struct AddonData {
  Napi::FunctionReference cancel_flag;  // the CancelFlag constructor of this environment
};

// ---- CancelFlag -------------------------------------------------------------------------------------

class CancelFlag : public Napi::ObjectWrap<CancelFlag> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "CancelFlag",
        {InstanceMethod("cancel", &CancelFlag::Cancel), InstanceAccessor("cancelled", &CancelFlag::Get, nullptr)});
  }
  CancelFlag(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<CancelFlag>(info), flag(std::make_shared<std::atomic<bool>>(false)) {}
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    flag->store(true);
    return info.Env().Undefined();
  }
  Napi::Value Get(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), flag->load()); }
  std::shared_ptr<std::atomic<bool>> flag;
};

// The flag of argument `i` when it is a CancelFlag of this environment.
std::shared_ptr<std::atomic<bool>> cancel_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsObject()) return nullptr;
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  Napi::Object o = info[i].As<Napi::Object>();
  if (!data || !o.InstanceOf(data->cancel_flag.Value()))
    throw coded(info.Env(), "ERR_INVALID_ARGUMENT", "the cancel argument must be a CancelFlag");
  return CancelFlag::Unwrap(o)->flag;
}

// ---- reading requests -------------------------------------------------------------------------------

// Typed fields of one request object; every mistake is an ERR_INVALID_ARGUMENT naming the field.
class Fields {
 public:
  Fields(const Napi::CallbackInfo& info, size_t i, std::string method) : env_(info.Env()), method_(std::move(method)) {
    if (info.Length() <= i || !info[i].IsObject()) bad("", "a request object is required");
    o_ = info[i].As<Napi::Object>();
  }
  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    throw coded(env_, "ERR_INVALID_ARGUMENT", method_ + (field.empty() ? "" : ": '" + field + "'") + ": " + what);
  }
  bool has(const char* k) const { return o_.Has(k) && !o_.Get(k).IsUndefined() && !o_.Get(k).IsNull(); }

  double number(const char* k) const {
    if (!has(k)) bad(k, "is required");
    return number_of(k, o_.Get(k));
  }
  std::optional<double> opt_number(const char* k) const {
    if (!has(k)) return std::nullopt;
    return number_of(k, o_.Get(k));
  }
  int integer(const char* k) const {
    if (!has(k)) bad(k, "is required");
    return integer_of(k, o_.Get(k));
  }
  std::optional<int> opt_integer(const char* k) const {
    if (!has(k)) return std::nullopt;
    return integer_of(k, o_.Get(k));
  }
  bool flag(const char* k) const {
    if (!has(k)) return false;
    if (!o_.Get(k).IsBoolean()) bad(k, "must be true or false");
    return o_.Get(k).As<Napi::Boolean>();
  }
  std::string string(const char* k) const {
    if (!has(k)) return "";
    if (!o_.Get(k).IsString()) bad(k, "must be a string");
    return o_.Get(k).As<Napi::String>();
  }
  HostTensor tensor(const char* k) const {
    if (!has(k)) bad(k, "is required");
    return tensor_of(k, o_.Get(k));
  }
  std::optional<HostTensor> opt_tensor(const char* k) const {
    if (!has(k)) return std::nullopt;
    return tensor_of(k, o_.Get(k));
  }
  std::vector<HostTensor> tensors(const char* k) const {
    if (!has(k) || !o_.Get(k).IsArray()) bad(k, "must be an array of tensors");
    Napi::Array a = o_.Get(k).As<Napi::Array>();
    std::vector<HostTensor> r;
    for (uint32_t i = 0; i < a.Length(); ++i)
      r.push_back(tensor_of(std::string(k) + "[" + std::to_string(i) + "]", a.Get(i)));
    return r;
  }
  // { shape: [B, L], data: Int32Array | BigInt64Array }
  TokenIds ids(const char* k) const {
    if (!has(k) || !o_.Get(k).IsObject()) bad(k, "must be { shape: [B, L], data: Int32Array | BigInt64Array }");
    Napi::Object t = o_.Get(k).As<Napi::Object>();
    std::vector<int64_t> shape = shape_of(k, t);
    if (shape.size() != 2) bad(k, "shape must be [B, L]");
    TokenIds r{shape[0], shape[1], {}};
    Napi::Value dv = t.Get("data");
    if (dv.IsTypedArray() && dv.As<Napi::TypedArray>().TypedArrayType() == napi_bigint64_array) {
      auto a = dv.As<Napi::TypedArrayOf<int64_t>>();
      r.ids.assign(a.Data(), a.Data() + a.ElementLength());
    } else if (dv.IsTypedArray() && dv.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
      auto a = dv.As<Napi::Int32Array>();
      r.ids.assign(a.Data(), a.Data() + a.ElementLength());
    } else {
      bad(k, "data must be an Int32Array or a BigInt64Array");
    }
    return r;
  }

 private:
  double number_of(const std::string& k, Napi::Value v) const {
    if (!v.IsNumber()) bad(k, "must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  int integer_of(const std::string& k, Napi::Value v) const {
    double d = number_of(k, v);
    if (!(std::fabs(d) <= 2147483647.0) || d != std::floor(d)) bad(k, "must be an integer");
    return (int)d;
  }
  std::vector<int64_t> shape_of(const std::string& k, Napi::Object t) const {
    if (!t.Get("shape").IsArray()) bad(k, "must have a shape (an array of sizes)");
    Napi::Array sh = t.Get("shape").As<Napi::Array>();
    if (sh.Length() > 8) bad(k, "shape has too many dimensions");
    std::vector<int64_t> shape;
    for (uint32_t i = 0; i < sh.Length(); ++i) {
      Napi::Value d = sh.Get(i);
      double v = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
      if (!(v >= 0 && v <= 9007199254740992.0) || v != std::floor(v)) bad(k, "shape must hold non-negative integers");
      shape.push_back((int64_t)v);
    }
    return shape;
  }
  // { shape: number[], data: Float32Array }
  HostTensor tensor_of(const std::string& k, Napi::Value v) const {
    if (!v.IsObject()) bad(k, "must be a tensor { shape: number[], data: Float32Array }");
    Napi::Object t = v.As<Napi::Object>();
    HostTensor r;
    r.shape = shape_of(k, t);
    Napi::Value dv = t.Get("data");
    if (!dv.IsTypedArray() || dv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      bad(k, "data must be a Float32Array");
    Napi::Float32Array a = dv.As<Napi::Float32Array>();
    r.data.assign(a.Data(), a.Data() + a.ElementLength());
    return r;
  }

  Napi::Env env_;
  std::string method_;
  Napi::Object o_;
};

// ---- results to JS ------------------------------------------------------------------------------------

Napi::Object tensor_js(Napi::Env env, const HostTensor& t) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape.Set((uint32_t)i, (double)t.shape[i]);
  Napi::Float32Array data = Napi::Float32Array::New(env, t.data.size());
  std::copy(t.data.begin(), t.data.end(), data.Data());
  o.Set("shape", shape);
  o.Set("data", data);
  return o;
}

Napi::Array tensors_js(Napi::Env env, const std::vector<HostTensor>& ts) {
  Napi::Array a = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); ++i) a.Set((uint32_t)i, tensor_js(env, ts[i]));
  return a;
}

Napi::Object intermediates_js(Napi::Env env, const Intermediates& m) {
  Napi::Object o = Napi::Object::New(env);
  for (auto& kv : m) o.Set(kv.first, tensor_js(env, kv.second));
  return o;
}

Napi::Object stats_js(Napi::Env env, const RunStats& s) {
  Napi::Object st = Napi::Object::New(env);
  st.Set("planMs", s.plan_ms);
  st.Set("uploadMs", s.upload_ms);
  st.Set("computeMs", s.compute_ms);
  st.Set("downloadMs", s.download_ms);
  st.Set("planReused", s.plan_reused);
  st.Set("arenaBytes", (double)s.arena_bytes);
  st.Set("naiveBytes", (double)s.naive_bytes);
  st.Set("ops", (double)s.ops);
  st.Set("flops", s.flops);
  return st;
}

Napi::Object plan_info_js(Napi::Env env, const PlanInfo& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("entry", p.entry);
  o.Set("key", p.key);
  o.Set("arenaBytes", (double)p.arena_bytes);
  o.Set("naiveBytes", (double)p.naive_bytes);
  o.Set("ops", (double)p.ops);
  o.Set("flops", p.flops);
  o.Set("cached", p.cached);
  return o;
}

Napi::Object model_info_js(Napi::Env env, const ModelInfo& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", m.id);
  o.Set("kind", m.kind);
  o.Set("path", m.path);
  o.Set("config", m.config_json);
  o.Set("description", m.description);
  o.Set("weightBytes", (double)m.weight_bytes);
  o.Set("parameters", (double)m.parameters);
  o.Set("tensors", (double)m.tensors);
  return o;
}

// ---- work off the main thread -------------------------------------------------------------------------

struct EngineHolder {
  std::unique_ptr<Engine> engine;
  std::string device, description;
  // Host bytes of loaded weights reported to V8 as external memory (CPU backend only: on CUDA the weights
  // live on the device), so the GC knows a loaded model is gigabytes. Main thread only.
  std::map<int, int64_t> reported;
};

// Reports (bytes > 0) or takes back (bytes == 0) a model's host memory to V8.
void report_memory(Napi::Env env, EngineHolder& h, int id, int64_t bytes) {
  if (h.device != "cpu" || id < 0) return;
  if (bytes > 0) {
    h.reported[id] = bytes;
  } else {
    auto it = h.reported.find(id);
    if (it == h.reported.end()) return;
    bytes = -it->second;
    h.reported.erase(it);
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
}

// `work` runs on a worker thread (throws xpsr::Error); `done` builds the resolution value on the main
// thread. The captures keep the engine alive until both have run.
class Task : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  static Napi::Promise queue(Napi::Env env, Work work, Done done) {
    auto* t = new Task(env, std::move(work), std::move(done));
    Napi::Promise p = t->deferred_.Promise();
    t->Queue();
    return p;
  }

 private:
  Task(Napi::Env env, Work work, Done done)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        done_(std::move(done)) {}
  void Execute() override {
    try {
      work_();
    } catch (const xpsr::Error& e) {
      code_ = e.code_name();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "ERR_OUT_OF_MEMORY";
      SetError("out of host memory");
    } catch (const std::exception& e) {
      code_ = "ERR_INTERNAL";
      SetError(std::string("internal error: ") + e.what());
    } catch (...) {
      code_ = "ERR_INTERNAL";
      SetError("internal error (unknown exception)");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(guarded(env, [&] { return done_(env); }));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(coded(Env(), code_.empty() ? "ERR_INTERNAL" : code_, e.Message()).Value());
  }
  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  std::string code_;
};

// ---- NativeEngine ---------------------------------------------------------------------------------

class NativeEngine : public Napi::ObjectWrap<NativeEngine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "NativeEngine",
        {InstanceMethod("load", &NativeEngine::Load), InstanceMethod("unload", &NativeEngine::Unload),
         InstanceMethod("clearPlans", &NativeEngine::ClearPlans), InstanceMethod("plans", &NativeEngine::Plans),
         InstanceMethod("textEncode", &NativeEngine::TextEncode), InstanceMethod("vaeEncode", &NativeEngine::VaeEncode),
         InstanceMethod("vaeDecode", &NativeEngine::VaeDecode),
         InstanceMethod("vaeEncodeTiled", &NativeEngine::VaeEncodeTiled),
         InstanceMethod("vaeDecodeTiled", &NativeEngine::VaeDecodeTiled),
         InstanceMethod("condEmbedding", &NativeEngine::CondEmbedding),
         InstanceMethod("controlnetForward", &NativeEngine::ControlNetForward),
         InstanceMethod("unetForward", &NativeEngine::UNetForward), InstanceMethod("step", &NativeEngine::Step),
         InstanceMethod("planStep", &NativeEngine::PlanStep), InstanceMethod("dispose", &NativeEngine::Dispose),
         InstanceAccessor("device", &NativeEngine::Device, nullptr),
         InstanceAccessor("description", &NativeEngine::Description, nullptr)});
  }

  // new NativeEngine({ device?: string, threads?: number })
  NativeEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEngine>(info) {
    guarded(info.Env(), [&] {
      std::string device = "cpu";
      int threads = 0;
      if (info.Length() > 0 && info[0].IsObject()) {
        Fields f(info, 0, "NativeEngine");
        if (f.has("device")) device = f.string("device");
        if (auto t = f.opt_integer("threads")) threads = *t;
        if (threads < 0 || threads > 4096) f.bad("threads", "must be in [0, 4096]");
      }
      BackendChoice be = make_backend(device, threads);
      holder_ = std::make_shared<EngineHolder>();
      holder_->description = be.backend->description();
      holder_->device = be.device;
      holder_->engine = std::make_unique<Engine>(std::move(be.backend));
    });
  }

 private:
  std::shared_ptr<EngineHolder> open(Napi::Env env) const {
    if (!holder_) throw coded(env, "ERR_DISPOSED", "this engine has been disposed");
    return holder_;
  }

  Napi::Value Device(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), holder_ ? holder_->device : "disposed");
  }
  Napi::Value Description(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), holder_ ? holder_->description : "disposed");
  }

  // load(kind, { path?, configJson?, variant?, synthetic?, seed?, vaeEncoder?, vaeDecoder?, checkOnly? })
  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto h = open(env);
      if (info.Length() < 1 || !info[0].IsString())
        throw coded(env, "ERR_INVALID_ARGUMENT", "load(kind: string, options)");
      const ModelKind kind = parse_model_kind(info[0].As<Napi::String>());
      Fields f(info, 1, "load");
      LoadOptions o;
      o.path = f.string("path");
      o.config_json = f.string("configJson");
      o.variant = f.string("variant");
      o.synthetic = f.flag("synthetic");
      o.check_only = f.flag("checkOnly");
      if (f.has("vaeEncoder")) o.vae_encoder = f.flag("vaeEncoder");
      if (f.has("vaeDecoder")) o.vae_decoder = f.flag("vaeDecoder");
      if (auto s = f.opt_number("seed")) {
        if (!(*s >= 0 && *s <= 9007199254740991.0) || *s != std::floor(*s))
          f.bad("seed", "must be a non-negative integer");
        o.seed = (uint64_t)*s;
      }
      auto info_out = std::make_shared<ModelInfo>();
      return Task::queue(
          env, [h, kind, o, info_out] { *info_out = h->engine->load(kind, o); },
          [h, info_out](Napi::Env env) -> Napi::Value {
            report_memory(env, *h, info_out->id, (int64_t)info_out->weight_bytes);
            return model_info_js(env, *info_out);
          });
    });
  }

  // unload(id): returns at once; while a call runs, the model is refused to new calls and freed at its end.
  Napi::Value Unload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto h = open(env);
      if (info.Length() < 1 || !info[0].IsNumber()) throw coded(env, "ERR_INVALID_ARGUMENT", "unload(id: number)");
      int id = info[0].As<Napi::Number>().Int32Value();
      h->engine->unload(id);
      report_memory(env, *h, id, 0);
      return env.Undefined();
    });
  }

  // clearPlans(): returns at once (deferred to the end of a running call).
  Napi::Value ClearPlans(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      open(info.Env())->engine->clear_plans();
      return info.Env().Undefined();
    });
  }

  Napi::Value Plans(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto plans = open(env)->engine->plans();
      Napi::Array a = Napi::Array::New(env, plans.size());
      for (size_t i = 0; i < plans.size(); ++i) a.Set((uint32_t)i, plan_info_js(env, plans[i]));
      return a;
    });
  }

  // One entry: `read` fills the request from argument 0 (main thread), `call` runs it on a worker, `js`
  // turns the result into the resolution value. Argument 1 may be a CancelFlag.
  template <class Req, class Res>
  Napi::Value entry(const Napi::CallbackInfo& info, const char* method,
                    const std::function<void(const Fields&, Req&)>& read,
                    Res (Engine::*call)(const Req&, const std::atomic<bool>*, RunStats*),
                    std::function<void(Napi::Env, const Res&, Napi::Object&)> js) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto h = open(env);
      auto req = std::make_shared<Req>();
      read(Fields(info, 0, method), *req);
      auto cancel = cancel_arg(info, 1);
      auto res = std::make_shared<Res>();
      auto st = std::make_shared<RunStats>();
      return Task::queue(
          env, [h, req, res, st, cancel, call] { *res = ((*h->engine).*call)(*req, cancel.get(), st.get()); },
          [h, res, st, js](Napi::Env env) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            js(env, *res, o);
            o.Set("stats", stats_js(env, *st));
            return o;
          });
    });
  }

  // textEncode({ model, inputIds: { shape: [B, L], data }, intermediates? }, cancel?)
  //   -> { lastHiddenState, intermediates, stats }
  Napi::Value TextEncode(const Napi::CallbackInfo& info) {
    return entry<TextEncodeRequest, TextEncodeResult>(
        info, "textEncode",
        [](const Fields& f, TextEncodeRequest& r) {
          r.model = f.integer("model");
          r.input_ids = f.ids("inputIds");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::text_encode,
        [](Napi::Env env, const TextEncodeResult& r, Napi::Object& o) {
          o.Set("lastHiddenState", tensor_js(env, r.last_hidden_state));
          o.Set("intermediates", intermediates_js(env, r.intermediates));
        });
  }

  // vaeEncode({ model, x, intermediates? }, cancel?) -> { moments, intermediates, stats }
  Napi::Value VaeEncode(const Napi::CallbackInfo& info) {
    return entry<VaeEncodeRequest, VaeEncodeResult>(
        info, "vaeEncode",
        [](const Fields& f, VaeEncodeRequest& r) {
          r.model = f.integer("model");
          r.x = f.tensor("x");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::vae_encode, moments_js);
  }

  // vaeDecode({ model, z, intermediates? }, cancel?) -> { image, intermediates, stats }
  Napi::Value VaeDecode(const Napi::CallbackInfo& info) {
    return entry<VaeDecodeRequest, VaeDecodeResult>(
        info, "vaeDecode",
        [](const Fields& f, VaeDecodeRequest& r) {
          r.model = f.integer("model");
          r.z = f.tensor("z");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::vae_decode, image_js);
  }

  // vaeEncodeTiled({ model, x, tile?, pad? }, cancel?) -> { moments, intermediates: {}, stats }
  Napi::Value VaeEncodeTiled(const Napi::CallbackInfo& info) {
    return entry<VaeTiledRequest, VaeEncodeResult>(
        info, "vaeEncodeTiled",
        [](const Fields& f, VaeTiledRequest& r) {
          r.model = f.integer("model");
          r.input = f.tensor("x");
          r.tile = f.opt_integer("tile"), r.pad = f.opt_integer("pad");
        },
        &Engine::vae_encode_tiled, moments_js);
  }

  // vaeDecodeTiled({ model, z, tile?, pad? }, cancel?) -> { image, intermediates: {}, stats }
  Napi::Value VaeDecodeTiled(const Napi::CallbackInfo& info) {
    return entry<VaeTiledRequest, VaeDecodeResult>(
        info, "vaeDecodeTiled",
        [](const Fields& f, VaeTiledRequest& r) {
          r.model = f.integer("model");
          r.input = f.tensor("z");
          r.tile = f.opt_integer("tile"), r.pad = f.opt_integer("pad");
        },
        &Engine::vae_decode_tiled, image_js);
  }

  // condEmbedding({ model, image, intermediates? }, cancel?) -> { cond, intermediates, stats }
  Napi::Value CondEmbedding(const Napi::CallbackInfo& info) {
    return entry<CondEmbeddingRequest, CondEmbeddingResult>(
        info, "condEmbedding",
        [](const Fields& f, CondEmbeddingRequest& r) {
          r.model = f.integer("model");
          r.image = f.tensor("image");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::cond_embedding,
        [](Napi::Env env, const CondEmbeddingResult& r, Napi::Object& o) {
          o.Set("cond", tensor_js(env, r.cond));
          o.Set("intermediates", intermediates_js(env, r.intermediates));
        });
  }

  // controlnetForward({ model, sample, timestep, ctxHigh, ctxLow?, cond? | image?, conditioningScale?,
  //   intermediates? }, cancel?) -> { down, mid, intermediates, stats }
  Napi::Value ControlNetForward(const Napi::CallbackInfo& info) {
    return entry<ControlNetRequest, ControlNetResult>(
        info, "controlnetForward",
        [](const Fields& f, ControlNetRequest& r) {
          r.model = f.integer("model");
          read_controlnet_inputs(f, r.in);
          r.intermediates = f.flag("intermediates");
        },
        &Engine::controlnet_forward,
        [](Napi::Env env, const ControlNetResult& r, Napi::Object& o) {
          o.Set("down", tensors_js(env, r.down));
          o.Set("mid", tensor_js(env, r.mid));
          o.Set("intermediates", intermediates_js(env, r.intermediates));
        });
  }

  // unetForward({ model, sample, timestep, ctxHigh, ctxLow?, down, mid, intermediates? }, cancel?)
  //   -> { sample, intermediates, stats }
  Napi::Value UNetForward(const Napi::CallbackInfo& info) {
    return entry<UNetRequest, UNetResult>(
        info, "unetForward",
        [](const Fields& f, UNetRequest& r) {
          r.model = f.integer("model");
          r.sample = f.tensor("sample");
          r.timestep = f.number("timestep");
          r.ctx_high = f.tensor("ctxHigh");
          r.ctx_low = f.opt_tensor("ctxLow");
          r.down = f.tensors("down");
          r.mid = f.tensor("mid");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::unet_forward,
        [](Napi::Env env, const UNetResult& r, Napi::Object& o) {
          o.Set("sample", tensor_js(env, r.sample));
          o.Set("intermediates", intermediates_js(env, r.intermediates));
        });
  }

  // step({ controlnet, unet, sample, timestep, ctxHigh, ctxLow?, cond? | image?, conditioningScale?,
  //   reuseConstants?, intermediates? }, cancel?) -> { noisePred, residuals, intermediates, stats }
  Napi::Value Step(const Napi::CallbackInfo& info) {
    return entry<StepRequest, StepResult>(
        info, "step",
        [](const Fields& f, StepRequest& r) {
          r.controlnet = f.integer("controlnet");
          r.unet = f.integer("unet");
          read_controlnet_inputs(f, r.in);
          r.reuse_constants = f.flag("reuseConstants");
          r.intermediates = f.flag("intermediates");
        },
        &Engine::step,
        [](Napi::Env env, const StepResult& r, Napi::Object& o) {
          o.Set("noisePred", tensor_js(env, r.noise_pred));
          o.Set("residuals", tensors_js(env, r.residuals));
          o.Set("intermediates", intermediates_js(env, r.intermediates));
        });
  }

  // planStep({ controlnet, unet, batch, height, width, contextLength?, lowContextLength?, imageCondition?,
  //   conditioningScale?, intermediates? }) -> { entry, key, arenaBytes, naiveBytes, ops, flops, cached }
  Napi::Value PlanStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto h = open(env);
      Fields f(info, 0, "planStep");
      StepShape s;
      s.controlnet = f.integer("controlnet"), s.unet = f.integer("unet");
      s.batch = f.integer("batch"), s.height = f.integer("height"), s.width = f.integer("width");
      if (auto v = f.opt_integer("contextLength")) s.context_length = *v;
      if (auto v = f.opt_integer("lowContextLength")) s.low_context_length = *v;
      s.image_condition = f.flag("imageCondition");
      if (auto v = f.opt_number("conditioningScale")) s.conditioning_scale = *v;
      s.intermediates = f.flag("intermediates");
      auto res = std::make_shared<PlanInfo>();
      return Task::queue(
          env, [h, s, res] { *res = h->engine->plan_step(s); },
          [h, res](Napi::Env env) -> Napi::Value { return plan_info_js(env, *res); });
    });
  }

  // Drops this handle; the engine (weights, plans, device memory) is freed once in-flight work ends.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      release(info.Env());
      return info.Env().Undefined();
    });
  }

  void Finalize(Napi::Env env) override {
    try {
      release(env);
    } catch (...) {  // a finalizer must not throw (the environment may be shutting down)
    }
  }

  void release(Napi::Env env) {
    if (!holder_) return;
    std::vector<int> ids;
    for (auto& kv : holder_->reported) ids.push_back(kv.first);
    for (int id : ids) report_memory(env, *holder_, id, 0);
    holder_.reset();
  }

  static void read_controlnet_inputs(const Fields& f, ControlNetInputs& in) {
    in.sample = f.tensor("sample");
    in.timestep = f.number("timestep");
    in.ctx_high = f.tensor("ctxHigh");
    in.ctx_low = f.opt_tensor("ctxLow");
    in.cond = f.opt_tensor("cond");
    in.image = f.opt_tensor("image");
    if (auto s = f.opt_number("conditioningScale")) in.conditioning_scale = *s;
  }
  static void moments_js(Napi::Env env, const VaeEncodeResult& r, Napi::Object& o) {
    o.Set("moments", tensor_js(env, r.moments));
    o.Set("intermediates", intermediates_js(env, r.intermediates));
  }
  static void image_js(Napi::Env env, const VaeDecodeResult& r, Napi::Object& o) {
    o.Set("image", tensor_js(env, r.image));
    o.Set("intermediates", intermediates_js(env, r.intermediates));
  }

  std::shared_ptr<EngineHolder> holder_;
};

// ---- free functions -------------------------------------------------------------------------------

Napi::Array strings_js(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a.Set((uint32_t)i, v[i]);
  return a;
}

Napi::Value SystemInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SystemInfo s = system_info();
    Napi::Object o = Napi::Object::New(env);
    o.Set("hardwareThreads", (double)s.hardware_threads);
    o.Set("cpuFeatures", strings_js(env, s.cpu_features));
    o.Set("backends", strings_js(env, s.backends));
    o.Set("cudaBuilt", s.cuda_built);
    o.Set("cpuBackend", s.cpu_backend);
    o.Set("cudaArchitectures", strings_js(env, s.cuda_architectures));
    o.Set("compiler", s.compiler);
    o.Set("glibc", s.glibc);
    return o;
  });
}

Napi::Value ListDevicesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    DeviceList l = list_devices();
    Napi::Array arr = Napi::Array::New(env, l.cuda.size());
    for (size_t i = 0; i < l.cuda.size(); ++i) {
      Napi::Object d = Napi::Object::New(env);
      d.Set("index", l.cuda[i].index);
      d.Set("name", l.cuda[i].name);
      d.Set("computeCapability", l.cuda[i].compute_capability);
      d.Set("totalMemory", (double)l.cuda[i].total_memory);
      d.Set("freeMemory", (double)l.cuda[i].free_memory);
      arr.Set((uint32_t)i, d);
    }
    Napi::Object res = Napi::Object::New(env);
    res.Set("cuda", arr);
    res.Set("reason", l.reason);
    return res;
  });
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return guarded(env, [&] {
    Napi::Function cancel = CancelFlag::Init(env);
    auto* data = new AddonData();
    data->cancel_flag = Napi::Persistent(cancel);
    env.SetInstanceData<AddonData>(data);  // freed with the environment
    exports.Set("CancelFlag", cancel);
    exports.Set("NativeEngine", NativeEngine::Init(env));
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfoJs));
    exports.Set("listDevices", Napi::Function::New(env, ListDevicesJs));
    exports.Set("exportOnnx", Napi::Function::New(env, ExportOnnx));            // ONNX export (onnx_export.cpp)
    exports.Set("profileOnnxStep", Napi::Function::New(env, ProfileOnnxStep));  // ONNX CPU benchmark
    register_weights_info(env, exports);  // inspectWeights, findWeightFiles (weights_info.cpp)
    return exports;
  });
}

}  // namespace

NODE_API_MODULE(xpsr, InitModule)
