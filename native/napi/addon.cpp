// N-API binding: a thin layer that turns JS values into engine calls and back (lib/native.ts mirrors it).
//   NativeEngine  one engine (backend + models + plans); long calls are AsyncWorkers resolving Promises
//   CancelFlag    an atomic flag a run polls between ops (fed from an AbortSignal in lib/)
//   systemInfo(), listDevices(), timestepFeatures()
// JS values are copied into plain C++ structs on the main thread; workers never touch N-API. Every
// xpsr::Error becomes a rejected JS Error with `.code`; nothing aborts the process.
#include <napi.h>

#include <atomic>
#include <map>
#include <memory>
#include <thread>

#include "engine/engine.h"
#include "engine/models/blocks.h"
#ifdef XPSR_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

using namespace xpsr;

void register_weights_info(Napi::Env env, Napi::Object exports);  // weights_info.cpp

namespace {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

[[noreturn]] void throw_js(Napi::Env env, const std::string& code, const std::string& message) {
  throw make_error(env, code, message);
}

// ---- CancelFlag -------------------------------------------------------------------------------------

class CancelFlag : public Napi::ObjectWrap<CancelFlag> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "CancelFlag",
                       {InstanceMethod("cancel", &CancelFlag::Cancel), InstanceAccessor("cancelled", &CancelFlag::Get, nullptr)});
  }
  CancelFlag(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CancelFlag>(info), flag(std::make_shared<std::atomic<bool>>(false)) {}
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    flag->store(true);
    return info.Env().Undefined();
  }
  Napi::Value Get(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), flag->load()); }
  std::shared_ptr<std::atomic<bool>> flag;
};

Napi::FunctionReference* g_cancel_ctor = nullptr;

// ---- engine holder shared by workers (keeps the engine alive while any worker runs) ------------------

struct EngineHolder {
  std::unique_ptr<Engine> engine;
  std::string device, description;
  // Host bytes of loaded weights reported to V8 as external memory (CPU backend only: on CUDA the weights
  // live on the device), so the GC knows a loaded model is gigabytes. Main thread only.
  std::map<int, int64_t> reported;
};

// Reports (or takes back) a model's host memory to V8.
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

// Worker base: owns the deferred, catches xpsr::Error into a code + message.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::shared_ptr<EngineHolder> h)
      : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), holder(std::move(h)) {}
  Napi::Promise promise() { return deferred.Promise(); }

 protected:
  void Execute() override {
    try {
      Work();
    } catch (const Error& e) {
      code = e.code_name();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code = "ERR_OUT_OF_MEMORY";
      SetError("out of host memory");
    } catch (const std::exception& e) {
      code = "ERR_INTERNAL";
      SetError(std::string("internal error: ") + e.what());
    }
  }
  virtual void Work() = 0;
  void OnError(const Napi::Error& e) override {
    deferred.Reject(make_error(Env(), code.empty() ? "ERR_INTERNAL" : code, e.Message()).Value());
  }
  Napi::Promise::Deferred deferred;
  std::shared_ptr<EngineHolder> holder;
  std::string code;
};

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

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::shared_ptr<EngineHolder> h, ModelKind k, LoadOptions o)
      : PromiseWorker(env, std::move(h)), kind(k), opts(std::move(o)) {}
  void Work() override { info = holder->engine->load(kind, opts); }
  void OnOK() override {
    report_memory(Env(), *holder, info.id, (int64_t)info.weight_bytes);
    deferred.Resolve(model_info_js(Env(), info));
  }
  ModelKind kind;
  LoadOptions opts;
  ModelInfo info;
};

class RunWorker : public PromiseWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<EngineHolder> h, RunRequest r, std::shared_ptr<std::atomic<bool>> c)
      : PromiseWorker(env, std::move(h)), req(std::move(r)), cancel(std::move(c)) {}
  void Work() override {
    if (cancel && cancel->load()) fail(ErrorCode::Cancelled, "cancelled before it started");
    out = holder->engine->run(req, cancel.get(), &stats);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object res = Napi::Object::New(env), outs = Napi::Object::New(env);
    for (auto& kv : out) {
      Napi::Object t = Napi::Object::New(env);
      Napi::Array shape = Napi::Array::New(env, kv.second.shape.size());
      for (size_t i = 0; i < kv.second.shape.size(); ++i) shape.Set((uint32_t)i, (double)kv.second.shape[i]);
      Napi::Float32Array data = Napi::Float32Array::New(env, kv.second.data.size());
      std::copy(kv.second.data.begin(), kv.second.data.end(), data.Data());
      t.Set("shape", shape);
      t.Set("data", data);
      outs.Set(kv.first, t);
    }
    Napi::Object st = Napi::Object::New(env);
    st.Set("planMs", stats.plan_ms);
    st.Set("uploadMs", stats.upload_ms);
    st.Set("computeMs", stats.compute_ms);
    st.Set("downloadMs", stats.download_ms);
    st.Set("planReused", stats.plan_reused);
    st.Set("arenaBytes", (double)stats.arena_bytes);
    st.Set("naiveBytes", (double)stats.naive_bytes);
    st.Set("ops", (double)stats.ops);
    res.Set("outputs", outs);
    res.Set("stats", st);
    deferred.Resolve(res);
  }
  RunRequest req;
  std::shared_ptr<std::atomic<bool>> cancel;
  OutputMap out;
  RunStats stats;
};

// ---- NativeEngine ---------------------------------------------------------------------------------

std::unique_ptr<Backend> make_backend(Napi::Env env, const std::string& device, int threads, std::string& resolved) {
  if (device == "cpu") {
    resolved = "cpu";
    return make_cpu_backend(threads);
  }
  if (device.rfind("cuda", 0) == 0) {
    int index = 0;
    if (device.size() > 5 && device[4] == ':') {
      try {
        index = std::stoi(device.substr(5));
      } catch (...) {
        throw_js(env, "ERR_INVALID_ARGUMENT", "device '" + device + "': expected cuda or cuda:N");
      }
    } else if (device != "cuda") {
      throw_js(env, "ERR_INVALID_ARGUMENT", "device '" + device + "': expected cpu, cuda or cuda:N");
    }
#ifdef XPSR_HAVE_CUDA
    resolved = "cuda:" + std::to_string(index);
    return make_cuda_backend(index);
#else
    throw_js(env, "ERR_DEVICE_UNAVAILABLE",
             "device '" + device + "': this build of xpsr-native has no CUDA backend (nvcc was not found when it was "
             "built, or XPSR_CUDA=off); rebuild with CUDA (npm run build:native) or use device 'cpu'");
#endif
  }
  throw_js(env, "ERR_INVALID_ARGUMENT", "device '" + device + "': expected 'cpu', 'cuda' or 'cuda:N'");
}

class NativeEngine : public Napi::ObjectWrap<NativeEngine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {InstanceMethod("load", &NativeEngine::Load), InstanceMethod("unload", &NativeEngine::Unload),
                        InstanceMethod("run", &NativeEngine::Run), InstanceMethod("clearPlans", &NativeEngine::ClearPlans),
                        InstanceMethod("dispose", &NativeEngine::Dispose),
                        InstanceAccessor("device", &NativeEngine::Device, nullptr),
                        InstanceAccessor("description", &NativeEngine::Description, nullptr)});
  }

  NativeEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEngine>(info) {
    Napi::Env env = info.Env();
    std::string device = "cpu";
    int threads = 0;
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      if (o.Has("device") && o.Get("device").IsString()) device = o.Get("device").As<Napi::String>();
      if (o.Has("threads") && o.Get("threads").IsNumber()) threads = o.Get("threads").As<Napi::Number>().Int32Value();
    }
    holder_ = std::make_shared<EngineHolder>();
    try {
      std::string resolved;
      auto be = make_backend(env, device, threads, resolved);
      holder_->description = be->description();
      holder_->device = resolved;
      holder_->engine = std::make_unique<Engine>(std::move(be));
    } catch (const Error& e) {
      throw_js(env, e.code_name(), e.what());
    }
  }

 private:
  void ensure_open(Napi::Env env) {
    if (!holder_) throw_js(env, "ERR_DISPOSED", "this engine has been disposed");
  }

  Napi::Value Device(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), holder_ ? holder_->device : "disposed");
  }
  Napi::Value Description(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), holder_ ? holder_->description : "disposed");
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ensure_open(env);
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
      throw_js(env, "ERR_INVALID_ARGUMENT", "load(kind: string, options: object)");
    ModelKind kind;
    try {
      kind = parse_model_kind(info[0].As<Napi::String>());
    } catch (const Error& e) {
      throw_js(env, e.code_name(), e.what());
    }
    Napi::Object o = info[1].As<Napi::Object>();
    LoadOptions opts;
    auto str = [&](const char* k, std::string& dst) {
      if (o.Has(k) && o.Get(k).IsString()) dst = o.Get(k).As<Napi::String>();
    };
    auto boolean = [&](const char* k, bool& dst) {
      if (o.Has(k) && o.Get(k).IsBoolean()) dst = o.Get(k).As<Napi::Boolean>();
    };
    str("path", opts.path);
    str("configJson", opts.config_json);
    str("variant", opts.variant);
    boolean("synthetic", opts.synthetic);
    boolean("vaeEncoder", opts.vae_encoder);
    boolean("vaeDecoder", opts.vae_decoder);
    boolean("checkOnly", opts.check_only);
    if (o.Has("seed") && o.Get("seed").IsNumber()) opts.seed = (uint64_t)o.Get("seed").As<Napi::Number>().Int64Value();
    auto* w = new LoadWorker(env, holder_, kind, opts);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  Napi::Value Unload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ensure_open(env);
    if (info.Length() < 1 || !info[0].IsNumber()) throw_js(env, "ERR_INVALID_ARGUMENT", "unload(id: number)");
    int id = info[0].As<Napi::Number>().Int32Value();
    holder_->engine->unload(id);
    report_memory(env, *holder_, id, 0);
    return env.Undefined();
  }

  Napi::Value ClearPlans(const Napi::CallbackInfo& info) {
    ensure_open(info.Env());
    holder_->engine->clear_plans();
    return info.Env().Undefined();
  }

  // run({ entry, models: number[], inputs: { name: { shape: number[], data: Float32Array | BigInt64Array } },
  //       params?: { name: number }, intermediates?: boolean }, cancel?: CancelFlag)
  Napi::Value Run(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ensure_open(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARGUMENT", "run(request: object)");
    Napi::Object o = info[0].As<Napi::Object>();
    RunRequest req;
    if (!o.Get("entry").IsString()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: 'entry' must be a string");
    req.entry = o.Get("entry").As<Napi::String>();
    if (!o.Get("models").IsArray()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: 'models' must be an array of ids");
    Napi::Array ms = o.Get("models").As<Napi::Array>();
    for (uint32_t i = 0; i < ms.Length(); ++i) req.models.push_back(ms.Get(i).As<Napi::Number>().Int32Value());
    if (o.Has("intermediates")) req.intermediates = o.Get("intermediates").ToBoolean();
    if (o.Has("params") && o.Get("params").IsObject()) {
      Napi::Object ps = o.Get("params").As<Napi::Object>();
      Napi::Array keys = ps.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string k = keys.Get(i).As<Napi::String>();
        Napi::Value v = ps.Get(k);
        if (!v.IsNumber()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: param '" + k + "' must be a number");
        req.params[k] = v.As<Napi::Number>().DoubleValue();
      }
    }
    if (!o.Get("inputs").IsObject()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: 'inputs' must be an object");
    Napi::Object ins = o.Get("inputs").As<Napi::Object>();
    Napi::Array names = ins.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      std::string name = names.Get(i).As<Napi::String>();
      Napi::Value tv = ins.Get(name);
      if (!tv.IsObject()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: input '" + name + "' must be {shape, data}");
      Napi::Object t = tv.As<Napi::Object>();
      TensorIn ti;
      if (!t.Get("shape").IsArray()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: input '" + name + "' has no shape");
      Napi::Array sh = t.Get("shape").As<Napi::Array>();
      for (uint32_t k = 0; k < sh.Length(); ++k) {
        Napi::Value d = sh.Get(k);
        if (!d.IsNumber()) throw_js(env, "ERR_INVALID_ARGUMENT", "run: input '" + name + "' shape must be numbers");
        ti.shape.push_back(d.As<Napi::Number>().Int64Value());
      }
      Napi::Value dv = t.Get("data");
      if (dv.IsTypedArray() && dv.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
        Napi::Float32Array a = dv.As<Napi::Float32Array>();
        ti.f32.assign(a.Data(), a.Data() + a.ElementLength());
      } else if (dv.IsTypedArray() && dv.As<Napi::TypedArray>().TypedArrayType() == napi_bigint64_array) {
        Napi::TypedArrayOf<int64_t> a = dv.As<Napi::TypedArrayOf<int64_t>>();
        ti.i64.assign(a.Data(), a.Data() + a.ElementLength());
      } else if (dv.IsTypedArray() && dv.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
        Napi::Int32Array a = dv.As<Napi::Int32Array>();
        ti.i64.assign(a.Data(), a.Data() + a.ElementLength());
      } else {
        throw_js(env, "ERR_INVALID_ARGUMENT", "run: input '" + name + "' data must be a Float32Array, Int32Array or BigInt64Array");
      }
      req.inputs[name] = std::move(ti);
    }
    std::shared_ptr<std::atomic<bool>> cancel;
    if (info.Length() > 1 && info[1].IsObject() && g_cancel_ctor &&
        info[1].As<Napi::Object>().InstanceOf(g_cancel_ctor->Value())) {
      cancel = CancelFlag::Unwrap(info[1].As<Napi::Object>())->flag;
    }
    auto* w = new RunWorker(env, holder_, std::move(req), cancel);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // Drops this handle; the engine (weights, plans, device memory) is freed once in-flight work ends.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release(info.Env());
    return info.Env().Undefined();
  }

  void Finalize(Napi::Env env) override { release(env); }

  void release(Napi::Env env) {
    if (!holder_) return;
    std::vector<int> ids;
    for (auto& kv : holder_->reported) ids.push_back(kv.first);
    for (int id : ids) report_memory(env, *holder_, id, 0);
    holder_.reset();
  }

  std::shared_ptr<EngineHolder> holder_;
};

// ---- free functions -------------------------------------------------------------------------------

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("hardwareThreads", (double)std::thread::hardware_concurrency());
  Napi::Array feats = Napi::Array::New(env);
  uint32_t nf = 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) feats.Set(nf++, "sse4.2");
  if (__builtin_cpu_supports("avx")) feats.Set(nf++, "avx");
  if (__builtin_cpu_supports("avx2")) feats.Set(nf++, "avx2");
  if (__builtin_cpu_supports("fma")) feats.Set(nf++, "fma");
  if (__builtin_cpu_supports("avx512f")) feats.Set(nf++, "avx512f");
#endif
  o.Set("cpuFeatures", feats);
  Napi::Array backends = Napi::Array::New(env);
  backends.Set(0u, "cpu");
#ifdef XPSR_HAVE_CUDA
  backends.Set(1u, "cuda");
  o.Set("cudaBuilt", true);
#else
  o.Set("cudaBuilt", false);
#endif
  o.Set("backends", backends);
  try {
    auto be = make_cpu_backend(0);
    o.Set("cpuBackend", be->description());
  } catch (const Error& e) {
    o.Set("cpuBackend", std::string("unavailable: ") + e.what());
  }
  return o;
}

Napi::Value ListDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  Napi::Array arr = Napi::Array::New(env);
#ifdef XPSR_HAVE_CUDA
  std::string why;
  auto devs = list_cuda_devices(&why);
  for (size_t i = 0; i < devs.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("index", devs[i].index);
    d.Set("name", devs[i].name);
    d.Set("computeCapability", std::to_string(devs[i].cc_major) + "." + std::to_string(devs[i].cc_minor));
    d.Set("totalMemory", (double)devs[i].total_mem);
    d.Set("freeMemory", (double)devs[i].free_mem);
    arr.Set((uint32_t)i, d);
  }
  res.Set("reason", why);
#else
  res.Set("reason", "built without the CUDA backend");
#endif
  res.Set("cuda", arr);
  return res;
}

Napi::Value TimestepFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw_js(env, "ERR_INVALID_ARGUMENT", "timestepFeatures(t, dim, flipSinToCos?, freqShift?)");
  bool flip = info.Length() > 2 ? info[2].ToBoolean().Value() : true;
  float shift = info.Length() > 3 ? info[3].ToNumber().FloatValue() : 0.f;
  auto f = timestep_features(info[0].As<Napi::Number>().FloatValue(), info[1].As<Napi::Number>().Int32Value(), flip, shift);
  Napi::Float32Array a = Napi::Float32Array::New(env, f.size());
  std::copy(f.begin(), f.end(), a.Data());
  return a;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  Napi::Function cancel = CancelFlag::Init(env);
  g_cancel_ctor = new Napi::FunctionReference(Napi::Persistent(cancel));
  exports.Set("CancelFlag", cancel);
  exports.Set("NativeEngine", NativeEngine::Init(env));
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
  exports.Set("listDevices", Napi::Function::New(env, ListDevices));
  exports.Set("timestepFeatures", Napi::Function::New(env, TimestepFeatures));
  register_weights_info(env, exports);  // inspectWeights, findWeightFiles (weights_info.cpp)
  return exports;
}

}  // namespace

NODE_API_MODULE(xpsr, InitModule)
