// xpsr captioner addon: image + instructions -> answers, with llama.cpp's mtmd on node-llama-cpp's libllama.
//
// Thin N-API layer: one ObjectWrap (CaptionerModel) owning (or borrowing) a llama_model, its own
// llama_context and an mtmd_context; one AsyncWorker per long call (load, caption), each resolving a
// Promise; a cancel request is an atomic job id polled between chunks/tokens and by llama's abort callback.
// Every failure is a rejected JS Error with a `.code`; nothing here aborts the process.
//
// The addon has no RUNPATH and is loaded after node-llama-cpp's getLlama(): its NEEDED libllama/libggml
// resolve to the copies node-llama-cpp already loaded (one backend registry, one set of weights).
//
// Context-aware: the addon may be loaded by several Node.js environments at once (main thread and
// worker_threads). Everything that belongs to one environment lives in its instance data (EnvData); the
// only process-wide state is llama.cpp's log hook, which llama.cpp itself keeps per process.
#include <napi.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

// node-llama-cpp's own AddonModel (header shipped in node-llama-cpp/llama/addon), used only to read the
// llama_model* of a LlamaModel the caller wants to share. Depends on node-llama-cpp's private layout:
// checked at run time (size, vocab pointer) and pinned by the exact node-llama-cpp version.
#include "AddonModel.h"

namespace {

// ---------------------------------------------------------------------------------------------------
// errors

struct CapError : std::runtime_error {
  std::string code;
  CapError(std::string c, const std::string& m) : std::runtime_error(m), code(std::move(c)) {}
};

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

[[noreturn]] void ThrowJs(Napi::Env env, const std::string& code, const std::string& message) {
  throw MakeError(env, code, message);
}

// ---------------------------------------------------------------------------------------------------
// mtmd/clip log: captured per worker thread (so errors can carry llama.cpp's reason) and printed to stderr
// only when XPSR_CAPTIONER_LOG asks for it (error|warn|info|debug).

std::atomic<int> g_print_level{-1};  // ggml_log_level threshold; -1 = print nothing (process-wide, like the hook)
thread_local std::string* t_capture = nullptr;
thread_local int t_last_level = GGML_LOG_LEVEL_INFO;

void LogCallback(ggml_log_level level, const char* text, void*) {
  int lv = level == GGML_LOG_LEVEL_CONT ? t_last_level : static_cast<int>(level);
  if (level != GGML_LOG_LEVEL_CONT) t_last_level = level;
  if (t_capture && lv >= GGML_LOG_LEVEL_WARN && t_capture->size() < 4000) t_capture->append(text ? text : "");
  if (g_print_level >= 0 && lv >= g_print_level) fputs(text ? text : "", stderr);
}

void InitLogging() {
  // Every environment that loads the addon runs this; the result is the same each time.
  const char* e = std::getenv("XPSR_CAPTIONER_LOG");
  if (e) {
    std::string s(e);
    if (s == "debug") g_print_level = GGML_LOG_LEVEL_DEBUG;
    else if (s == "info") g_print_level = GGML_LOG_LEVEL_INFO;
    else if (s == "warn") g_print_level = GGML_LOG_LEVEL_WARN;
    else if (s == "error") g_print_level = GGML_LOG_LEVEL_ERROR;
  }
  static std::once_flag once;
  std::call_once(once, [] { mtmd_helper_log_set(LogCallback, nullptr); });
}

struct LogCapture {
  std::string text;
  std::string* prev;
  LogCapture() : prev(t_capture) { t_capture = &text; }
  ~LogCapture() { t_capture = prev; }
  std::string reason() const {
    std::string s = text;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    for (auto& c : s)
      if (c == '\n') c = ';';
    return s.empty() ? std::string() : " (llama.cpp: " + s + ")";
  }
};

// Per-environment state (napi instance data). Node frees it after the finalizers of the environment's
// objects have run, so a CaptionerModel may keep a pointer to it for its whole life.
struct EnvData {
  // Set by the environment's cleanup hook: finalizers running after it must not free llama.cpp objects
  // (node-llama-cpp may already have released the backend or a borrowed model). Another environment
  // shutting down does not affect this one.
  std::atomic<bool> exiting{false};
  std::atomic<int> objects{0};  // CaptionerModel objects alive in this environment
  std::atomic<int> loaded{0};   // of those, how many hold a loaded model
};

EnvData* GetEnvData(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------------------
// options

struct LoadOptions {
  std::string modelPath;
  std::string mmprojPath;
  llama_model* borrowed = nullptr;
  int contextSize = 2048;
  int batchSize = 512;
  int threads = 1;
  int gpuLayers = 0;  // -1 = all
  bool mmprojGpu = false;
  bool warmup = false;
};

struct GenOptions {
  int maxTokens = 175;
  int minTokens = 0;
  float temperature = 0.0f;
  int topK = 40;
  float topP = 0.95f;
  uint32_t seed = 0;
};

// Decoded 8-bit RGB pixels: images are decoded in JS by the library's one decoder (lib/image, sharp).
struct Image {
  std::vector<unsigned char> rgb;
  uint32_t width = 0, height = 0;
};

struct AnswerStats {
  int promptTokens = 0;
  int generatedTokens = 0;
  double prefillMs = 0;
  double generateMs = 0;
  std::string stopReason;
};

struct CaptionStats {
  int imageTokens = 0;
  int imagePositions = 0;
  double encodeMs = 0;         // CLIP + projector
  double imagePrefillMs = 0;   // image embeddings into the LM's KV cache
  double prefixPrefillMs = 0;  // text before the image (BOS ...)
  int imagePasses = 0;
  bool prefixReused = false;  // the image prefix evaluated by the previous call was reused
  std::vector<AnswerStats> answers;
};

int GetInt(const Napi::Object& o, const char* k, int def) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : def;
}
double GetNum(const Napi::Object& o, const char* k, double def) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}
bool GetBool(const Napi::Object& o, const char* k, bool def) {
  Napi::Value v = o.Get(k);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}
std::string GetStr(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

// ---------------------------------------------------------------------------------------------------

class CaptionerModel : public Napi::ObjectWrap<CaptionerModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit CaptionerModel(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<CaptionerModel>(info), env_data_(GetEnvData(info.Env())) {
    env_data_->objects++;
  }
  ~CaptionerModel() override {
    // Finalizer without dispose(): free unless this environment is shutting down (node-llama-cpp may already
    // have released the backend / a borrowed model; leaking at exit is harmless).
    if (!env_data_->exiting.load() && !busy_.load()) FreeAll();
    env_data_->objects--;
  }

  EnvData* const env_data_;

  // state shared with workers
  llama_model* model_ = nullptr;
  bool borrowed_ = false;
  llama_context* lctx_ = nullptr;
  mtmd_context* mctx_ = nullptr;
  LoadOptions opts_;
  std::atomic<bool> busy_{false};
  std::atomic<bool> loaded_{false};
  std::atomic<bool> disposed_{false};
  std::atomic<int64_t> current_job_{-1};
  std::atomic<int64_t> cancel_job_{-2};

  // The image prefix left in the KV cache by the last shared-prefix call (touched only by the running
  // worker): a later call with the same key (image pixels + prompt prefix, hashed in JS) continues from it
  // instead of encoding the image again. Cleared whenever the cache may no longer hold it.
  std::string prefix_key_;
  llama_pos prefix_n_ = 0;
  int prefix_image_tokens_ = 0;
  int prefix_image_positions_ = 0;

  bool Cancelled() const {
    int64_t c = current_job_.load();
    return c >= 0 && cancel_job_.load() == c;
  }

  void FreeAll() {
    prefix_key_.clear();
    if (mctx_) {
      mtmd_free(mctx_);
      mctx_ = nullptr;
    }
    if (lctx_) {
      llama_free(lctx_);
      lctx_ = nullptr;
    }
    if (model_ && !borrowed_) llama_model_free(model_);
    model_ = nullptr;
    if (loaded_.exchange(false)) env_data_->loaded--;
  }

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Caption(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  void Acquire(Napi::Env env) {
    if (disposed_.load()) ThrowJs(env, "ERR_DISPOSED", "the captioner was disposed");
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true)) {
      ThrowJs(env, "ERR_BUSY", "the captioner is already running a call (calls must be serialized)");
    }
  }
  friend class LoadWorker;
  friend class CaptionWorker;
};

// Base worker: keeps the JS object alive, rejects with a coded error, releases the busy flag.
class BaseWorker : public Napi::AsyncWorker {
 public:
  BaseWorker(Napi::Env env, CaptionerModel* self, Napi::Object selfObj)
      : Napi::AsyncWorker(env), self_(self), deferred_(Napi::Promise::Deferred::New(env)) {
    selfRef_ = Napi::Persistent(selfObj);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Fail(const std::string& code, const std::string& msg) {
    code_ = code;
    SetError(msg);
  }
  void Execute() override {
    try {
      Run();
    } catch (const CapError& e) {
      Fail(e.code, e.what());
    } catch (const std::bad_alloc&) {
      Fail("ERR_OUT_OF_MEMORY", "out of host memory");
    } catch (const std::exception& e) {
      Fail("ERR_INTERNAL", std::string("unexpected error: ") + e.what());
    } catch (...) {
      Fail("ERR_INTERNAL", "unexpected non-standard exception");
    }
  }
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  void OnOK() override {
    Napi::Env env = Env();
    self_->busy_ = false;
    self_->current_job_ = -1;
    deferred_.Resolve(Result(env));
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    self_->busy_ = false;
    self_->current_job_ = -1;
    deferred_.Reject(MakeError(env, code_.empty() ? "ERR_INTERNAL" : code_, e.Message()).Value());
  }

  CaptionerModel* self_;
  Napi::ObjectReference selfRef_;
  Napi::Promise::Deferred deferred_;
  std::string code_;
};

// ---------------------------------------------------------------------------------------------------
// load

class LoadWorker : public BaseWorker {
 public:
  using BaseWorker::BaseWorker;

 protected:
  static bool ModelProgress(float, void* d) { return !static_cast<CaptionerModel*>(d)->Cancelled(); }
  void Run() override {
    CaptionerModel* s = self_;
    LoadOptions& o = s->opts_;
    LogCapture cap;
    if (!s->borrowed_) {
      llama_model_params mp = llama_model_default_params();
      mp.n_gpu_layers = o.gpuLayers;
      mp.progress_callback = ModelProgress;
      mp.progress_callback_user_data = s;
      s->model_ = llama_model_load_from_file(o.modelPath.c_str(), mp);
      if (!s->model_) {
        if (s->Cancelled()) throw CapError("ERR_CANCELLED", "model load cancelled");
        throw CapError("ERR_MODEL_LOAD",
                       "llama.cpp could not load the language model '" + o.modelPath +
                           "' (corrupt or truncated GGUF, unsupported architecture, or out of memory; run with "
                           "node-llama-cpp logging for details)" +
                           cap.reason());
      }
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(o.contextSize);
    cp.n_batch = static_cast<uint32_t>(o.batchSize);
    cp.n_ubatch = static_cast<uint32_t>(o.batchSize);
    cp.n_seq_max = 1;
    cp.n_threads = o.threads;
    cp.n_threads_batch = o.threads;
    cp.no_perf = true;
    s->lctx_ = llama_init_from_model(s->model_, cp);
    if (!s->lctx_) {
      s->FreeAll();
      throw CapError("ERR_CONTEXT", "llama.cpp could not create a context of " + std::to_string(o.contextSize) +
                                        " tokens (out of memory?)" + cap.reason());
    }
    llama_set_abort_callback(
        s->lctx_, [](void* d) { return static_cast<CaptionerModel*>(d)->Cancelled(); }, s);

    mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = o.mmprojGpu;
    mp.n_threads = o.threads;
    mp.print_timings = false;
    mp.warmup = o.warmup;
    mp.progress_callback = ModelProgress;
    mp.progress_callback_user_data = s;
    s->mctx_ = mtmd_init_from_file(o.mmprojPath.c_str(), s->model_, mp);
    if (!s->mctx_) {
      bool cancelled = s->Cancelled();
      std::string why = cap.reason();
      s->FreeAll();
      if (cancelled) throw CapError("ERR_CANCELLED", "mmproj load cancelled");
      throw CapError("ERR_MMPROJ_LOAD",
                     "llama.cpp could not load the multimodal projector '" + o.mmprojPath +
                         "' (not a CLIP/mmproj GGUF, corrupt, or its projector width does not match the language "
                         "model)" +
                         why);
    }
    if (!mtmd_support_vision(s->mctx_)) {
      s->FreeAll();
      throw CapError("ERR_MMPROJ_LOAD", "'" + o.mmprojPath + "' has no vision encoder");
    }
    s->loaded_ = true;
    s->env_data_->loaded++;
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    CaptionerModel* s = self_;
    r.Set("contextSize", Napi::Number::New(env, llama_n_ctx(s->lctx_)));
    r.Set("embeddingSize", Napi::Number::New(env, llama_model_n_embd(s->model_)));
    r.Set("vocabSize", Napi::Number::New(env, llama_vocab_n_tokens(llama_model_get_vocab(s->model_))));
    r.Set("borrowed", Napi::Boolean::New(env, s->borrowed_));
    r.Set("marker", Napi::String::New(env, mtmd_get_marker(s->mctx_)));
    char desc[256] = {0};
    llama_model_desc(s->model_, desc, sizeof desc);
    r.Set("description", Napi::String::New(env, desc));
    return r;
  }
};

Napi::Value CaptionerModel::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "load(options) expects an object");
  if (loaded_.load()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "already loaded");
  Napi::Object o = info[0].As<Napi::Object>();
  LoadOptions lo;
  lo.modelPath = GetStr(o, "modelPath");
  lo.mmprojPath = GetStr(o, "mmprojPath");
  lo.contextSize = GetInt(o, "contextSize", 2048);
  lo.batchSize = GetInt(o, "batchSize", 512);
  lo.threads = GetInt(o, "threads", 1);
  lo.gpuLayers = GetInt(o, "gpuLayers", 0);
  lo.mmprojGpu = GetBool(o, "mmprojGpu", false);
  lo.warmup = GetBool(o, "warmup", false);
  if (lo.mmprojPath.empty()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "mmprojPath is required");
  if (lo.contextSize < 64 || lo.batchSize < 1 || lo.threads < 1) {
    ThrowJs(env, "ERR_INVALID_ARGUMENT", "contextSize >= 64, batchSize >= 1 and threads >= 1 are required");
  }
  Napi::Value b = o.Get("borrowModel");
  llama_model* borrowed = nullptr;
  if (b.IsObject()) {
    // node-llama-cpp's AddonModel is an ObjectWrap: napi_unwrap gives the AddonModel*.
    void* p = nullptr;
    if (napi_unwrap(env, b, &p) != napi_ok || p == nullptr) {
      ThrowJs(env, "ERR_MODEL_SHARE",
              "the given LlamaModel has no native model (disposed, or not from node-llama-cpp)");
    }
    auto* am = static_cast<AddonModel*>(static_cast<Napi::ObjectWrap<AddonModel>*>(p));
    double expected = GetNum(o, "borrowModelSize", -1);
    // Layout self-check before dereferencing anything: the size node-llama-cpp reported through its public
    // API must match the field read through the header, and the vocab must belong to the model.
    if (am->disposed || !am->modelLoaded || am->model == nullptr || am->vocab == nullptr ||
        static_cast<double>(am->loadedModelSize) != expected) {
      ThrowJs(env, "ERR_MODEL_SHARE",
              "cannot share this LlamaModel: it is not loaded, or this node-llama-cpp build "
              "does not match the layout the captioner was compiled for (rebuild: node scripts/build-captioner.mjs "
              "--force)");
    }
    if (llama_model_get_vocab(am->model) != am->vocab || static_cast<double>(llama_model_size(am->model)) != expected) {
      ThrowJs(env, "ERR_MODEL_SHARE", "cannot share this LlamaModel: layout self-check failed");
    }
    borrowed = am->model;
  } else if (lo.modelPath.empty()) {
    ThrowJs(env, "ERR_INVALID_ARGUMENT", "modelPath or borrowModel is required");
  }
  Acquire(env);
  opts_ = lo;
  model_ = borrowed;
  borrowed_ = borrowed != nullptr;
  int64_t job = GetInt(o, "jobId", 0);
  current_job_ = job;
  auto* w = new LoadWorker(env, this, info.This().As<Napi::Object>());
  Napi::Promise pr = w->Promise();
  w->Queue();
  return pr;
}

// ---------------------------------------------------------------------------------------------------
// caption

class CaptionWorker : public BaseWorker {
 public:
  CaptionWorker(Napi::Env env, CaptionerModel* self, Napi::Object selfObj) : BaseWorker(env, self, selfObj) {}
  Image image;
  std::string prefix;                 // text up to and including the media marker
  std::vector<std::string> suffixes;  // one per instruction
  bool sharePrefix = true;
  std::string prefixKey;  // identity of image + prefix; empty = never reuse
  GenOptions gen;
  std::vector<std::string> answers;
  CaptionStats stats;

 protected:
  using ChunksPtr = std::unique_ptr<mtmd_input_chunks, decltype(&mtmd_input_chunks_free)>;
  using BitmapPtr = std::unique_ptr<mtmd_bitmap, decltype(&mtmd_bitmap_free)>;

  void CheckCancel() {
    if (self_->Cancelled()) throw CapError("ERR_CANCELLED", "captioning was cancelled");
  }
  void CheckDecode(int32_t rc, const char* what) {
    if (rc == 0) return;
    if (self_->Cancelled() || rc == 2) throw CapError("ERR_CANCELLED", "captioning was cancelled");
    if (rc == 1)
      throw CapError("ERR_CONTEXT_FULL", std::string(what) + ": no room left in the context (raise contextSize)");
    throw CapError("ERR_DECODE", std::string(what) + ": llama_decode failed with code " + std::to_string(rc));
  }

  ChunksPtr Tokenize(const std::string& text, bool addSpecial, const mtmd_bitmap* bmp) {
    ChunksPtr chunks(mtmd_input_chunks_init(), &mtmd_input_chunks_free);
    mtmd_input_text t{text.c_str(), text.size(), addSpecial, true};
    const mtmd_bitmap* bmps[1] = {bmp};
    LogCapture cap;
    int32_t rc = mtmd_tokenize(self_->mctx_, chunks.get(), &t, bmp ? bmps : nullptr, bmp ? 1 : 0);
    if (rc != 0) throw CapError("ERR_TOKENIZE", "mtmd_tokenize failed (" + std::to_string(rc) + ")" + cap.reason());
    return chunks;
  }

  // Evaluate chunks at n_past on sequence 0; logits for the last token of the last chunk.
  llama_pos Eval(const mtmd_input_chunks* chunks, llama_pos n_past, double* textMs) {
    llama_context* lctx = self_->lctx_;
    const int n_batch = self_->opts_.batchSize;
    const int n_ctx = static_cast<int>(llama_n_ctx(lctx));
    size_t n = mtmd_input_chunks_size(chunks);
    llama_pos need = n_past + mtmd_helper_get_n_pos(chunks);
    if (need > n_ctx) {
      throw CapError("ERR_CONTEXT_FULL", "the prompt needs " + std::to_string(need) + " positions but contextSize is " +
                                             std::to_string(n_ctx));
    }
    for (size_t ci = 0; ci < n; ++ci) {
      CheckCancel();
      const mtmd_input_chunk* ch = mtmd_input_chunks_get(chunks, ci);
      const bool last = ci + 1 == n;
      auto type = mtmd_input_chunk_get_type(ch);
      if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
        size_t nt = 0;
        const llama_token* toks = mtmd_input_chunk_get_tokens_text(ch, &nt);
        double t0 = NowMs();
        llama_batch batch = llama_batch_init(n_batch, 0, 1);
        try {
          size_t i = 0;
          while (i < nt) {
            CheckCancel();
            batch.n_tokens = 0;
            for (; i < nt && batch.n_tokens < n_batch; ++i) {
              int j = batch.n_tokens++;
              batch.token[j] = toks[i];
              batch.pos[j] = n_past++;
              batch.n_seq_id[j] = 1;
              batch.seq_id[j][0] = 0;
              batch.logits[j] = false;
            }
            if (last && i == nt) batch.logits[batch.n_tokens - 1] = true;
            CheckDecode(llama_decode(lctx, batch), "prompt prefill");
          }
        } catch (...) {
          llama_batch_free(batch);
          throw;
        }
        llama_batch_free(batch);
        if (textMs) *textMs += NowMs() - t0;
      } else if (type == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
        n_past = EvalImage(ch, n_past);
        if (last) throw CapError("ERR_INVALID_ARGUMENT", "the prompt must not end with the image");
      } else {
        throw CapError("ERR_UNSUPPORTED", "audio input is not supported");
      }
    }
    return n_past;
  }

  std::string Generate(llama_pos n_past, AnswerStats& st) {
    llama_context* lctx = self_->lctx_;
    const llama_vocab* vocab = llama_model_get_vocab(self_->model_);
    const int n_ctx = static_cast<int>(llama_n_ctx(lctx));
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_sampler_chain_params scp = llama_sampler_chain_default_params();
    scp.no_perf = true;
    std::unique_ptr<llama_sampler, decltype(&llama_sampler_free)> smpl(llama_sampler_chain_init(scp),
                                                                       &llama_sampler_free);
    if (gen.temperature <= 0.0f) {
      llama_sampler_chain_add(smpl.get(), llama_sampler_init_greedy());
    } else {
      if (gen.topK > 0) llama_sampler_chain_add(smpl.get(), llama_sampler_init_top_k(gen.topK));
      if (gen.topP > 0.0f && gen.topP < 1.0f)
        llama_sampler_chain_add(smpl.get(), llama_sampler_init_top_p(gen.topP, 1));
      llama_sampler_chain_add(smpl.get(), llama_sampler_init_temp(gen.temperature));
      llama_sampler_chain_add(smpl.get(), llama_sampler_init_dist(gen.seed));
    }
    std::string out;
    char buf[256];
    double t0 = NowMs();
    st.stopReason = "maxTokens";
    for (int i = 0; i < gen.maxTokens; ++i) {
      CheckCancel();
      if (i < gen.minTokens) {
        // suppress end-of-generation tokens until minTokens (benchmarks)
        float* logits = llama_get_logits_ith(lctx, -1);
        if (logits) {
          for (llama_token t : {llama_vocab_eos(vocab), llama_vocab_eot(vocab)}) {
            if (t >= 0 && t < n_vocab) logits[t] = -std::numeric_limits<float>::infinity();
          }
        }
      }
      llama_token tok = llama_sampler_sample(smpl.get(), lctx, -1);
      if (llama_vocab_is_eog(vocab, tok)) {
        st.stopReason = "eos";
        break;
      }
      int n = llama_token_to_piece(vocab, tok, buf, sizeof buf, 0, false);
      if (n > 0) out.append(buf, static_cast<size_t>(n));
      st.generatedTokens++;
      if (i + 1 >= gen.maxTokens) break;
      if (n_past >= n_ctx) {
        st.stopReason = "contextFull";
        break;
      }
      llama_batch b = llama_batch_get_one(&tok, 1);
      CheckDecode(llama_decode(lctx, b), "generation");
      n_past++;
    }
    st.generateMs = NowMs() - t0;
    return out;
  }

  void Run() override {
    try {
      RunJob();
    } catch (...) {
      self_->prefix_key_.clear();  // a failed or cancelled call may have left the cache half-written
      throw;
    }
  }

  // The image prefix at positions [0, n): reused from the previous call when it left the same one.
  llama_pos PrefixInCache(llama_memory_t mem, const mtmd_bitmap* bmp) {
    CaptionerModel* s = self_;
    if (!prefixKey.empty() && s->prefix_key_ == prefixKey && llama_memory_seq_rm(mem, 0, s->prefix_n_, -1)) {
      stats.prefixReused = true;
      stats.imageTokens = s->prefix_image_tokens_;
      stats.imagePositions = s->prefix_image_positions_;
      return s->prefix_n_;
    }
    s->prefix_key_.clear();
    llama_memory_clear(mem, true);
    ChunksPtr pre = Tokenize(prefix, true, bmp);
    // The prefix ends with the image; Eval() rejects prompts ending with an image only at the last chunk,
    // so evaluate the prefix chunks one by one here.
    llama_pos n_past = 0;
    size_t n = mtmd_input_chunks_size(pre.get());
    for (size_t ci = 0; ci < n; ++ci) {
      const mtmd_input_chunk* ch = mtmd_input_chunks_get(pre.get(), ci);
      n_past = EvalSingle(ch, n_past);
    }
    s->prefix_key_ = prefixKey;
    s->prefix_n_ = n_past;
    s->prefix_image_tokens_ = stats.imageTokens;
    s->prefix_image_positions_ = stats.imagePositions;
    return n_past;
  }

  void RunJob() {
    CaptionerModel* s = self_;
    llama_memory_t mem = llama_get_memory(s->lctx_);
    BitmapPtr bmp(mtmd_bitmap_init(image.width, image.height, image.rgb.data()), &mtmd_bitmap_free);
    if (!bmp) throw CapError("ERR_OUT_OF_MEMORY", "cannot create a bitmap of the image");
    CheckCancel();

    answers.resize(suffixes.size());
    stats.answers.resize(suffixes.size());
    if (sharePrefix) {
      const llama_pos n_prefix = PrefixInCache(mem, bmp.get());
      for (size_t k = 0; k < suffixes.size(); ++k) {
        CheckCancel();
        if (!llama_memory_seq_rm(mem, 0, n_prefix, -1)) throw CapError("ERR_INTERNAL", "cannot trim the KV cache");
        ChunksPtr suf = Tokenize(suffixes[k], false, nullptr);
        if (mtmd_helper_get_n_tokens(suf.get()) == 0) {
          throw CapError("ERR_INVALID_ARGUMENT",
                         "the prompt after the image is empty (instruction " + std::to_string(k + 1) + ")");
        }
        AnswerStats& st = stats.answers[k];
        st.promptTokens = static_cast<int>(mtmd_helper_get_n_tokens(suf.get()));
        llama_pos np = Eval(suf.get(), n_prefix, &st.prefillMs);
        answers[k] = Generate(np, st);
      }
    } else {
      s->prefix_key_.clear();
      for (size_t k = 0; k < suffixes.size(); ++k) {
        CheckCancel();
        llama_memory_clear(mem, true);
        ChunksPtr all = Tokenize(prefix + suffixes[k], true, bmp.get());
        AnswerStats& st = stats.answers[k];
        st.promptTokens = static_cast<int>(mtmd_helper_get_n_tokens(all.get()));
        double textMs = 0;
        llama_pos np = Eval(all.get(), 0, &textMs);
        st.prefillMs = textMs;
        answers[k] = Generate(np, st);
      }
    }
  }

  // One prefix chunk (text or image), no logits needed.
  llama_pos EvalSingle(const mtmd_input_chunk* ch, llama_pos n_past) {
    CheckCancel();
    llama_context* lctx = self_->lctx_;
    const int n_batch = self_->opts_.batchSize;
    if (n_past + mtmd_input_chunk_get_n_pos(ch) > static_cast<llama_pos>(llama_n_ctx(lctx))) {
      throw CapError("ERR_CONTEXT_FULL", "the image does not fit in contextSize " + std::to_string(llama_n_ctx(lctx)));
    }
    if (mtmd_input_chunk_get_type(ch) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
      size_t nt = 0;
      const llama_token* toks = mtmd_input_chunk_get_tokens_text(ch, &nt);
      double t0 = NowMs();
      llama_batch batch = llama_batch_init(n_batch, 0, 1);
      size_t i = 0;
      int32_t rc = 0;
      while (i < nt && rc == 0) {
        batch.n_tokens = 0;
        for (; i < nt && batch.n_tokens < n_batch; ++i) {
          int j = batch.n_tokens++;
          batch.token[j] = toks[i];
          batch.pos[j] = n_past++;
          batch.n_seq_id[j] = 1;
          batch.seq_id[j][0] = 0;
          batch.logits[j] = false;
        }
        rc = llama_decode(lctx, batch);
      }
      llama_batch_free(batch);
      stats.prefixPrefillMs += NowMs() - t0;
      CheckDecode(rc, "prompt prefill");
      return n_past;
    }
    if (mtmd_input_chunk_get_type(ch) != MTMD_INPUT_CHUNK_TYPE_IMAGE)
      throw CapError("ERR_UNSUPPORTED", "audio input is not supported");
    return EvalImage(ch, n_past);
  }

  // Encodes one image chunk (CLIP + projector) and decodes its embeddings into the KV cache at n_past.
  llama_pos EvalImage(const mtmd_input_chunk* ch, llama_pos n_past) {
    LogCapture cap;
    double t0 = NowMs();
    int32_t rc = mtmd_encode_chunk(self_->mctx_, ch);
    stats.encodeMs += NowMs() - t0;
    CheckCancel();
    if (rc != 0) throw CapError("ERR_ENCODE", "image encoding failed (" + std::to_string(rc) + ")" + cap.reason());
    stats.imageTokens = static_cast<int>(mtmd_input_chunk_get_n_tokens(ch));
    stats.imagePositions = static_cast<int>(mtmd_input_chunk_get_n_pos(ch));
    stats.imagePasses++;
    double t1 = NowMs();
    llama_pos np = n_past;
    rc = mtmd_helper_decode_image_chunk(self_->mctx_, self_->lctx_, ch, mtmd_get_output_embd(self_->mctx_), n_past, 0,
                                        self_->opts_.batchSize, &np, nullptr, nullptr);
    stats.imagePrefillMs += NowMs() - t1;
    CheckDecode(rc, "image prefill");
    return np;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    Napi::Array a = Napi::Array::New(env, answers.size());
    for (size_t i = 0; i < answers.size(); ++i)
      a.Set(i, Napi::Buffer<char>::Copy(env, answers[i].data(), answers[i].size()));
    r.Set("answers", a);
    Napi::Object s = Napi::Object::New(env);
    s.Set("imageTokens", stats.imageTokens);
    s.Set("imagePositions", stats.imagePositions);
    s.Set("imagePasses", stats.imagePasses);
    s.Set("prefixReused", stats.prefixReused);
    s.Set("encodeMs", stats.encodeMs);
    s.Set("imagePrefillMs", stats.imagePrefillMs);
    s.Set("prefixPrefillMs", stats.prefixPrefillMs);
    Napi::Array as = Napi::Array::New(env, stats.answers.size());
    for (size_t i = 0; i < stats.answers.size(); ++i) {
      const AnswerStats& x = stats.answers[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("promptTokens", x.promptTokens);
      o.Set("generatedTokens", x.generatedTokens);
      o.Set("prefillMs", x.prefillMs);
      o.Set("generateMs", x.generateMs);
      o.Set("stopReason", x.stopReason);
      as.Set(i, o);
    }
    s.Set("answers", as);
    r.Set("stats", s);
    return r;
  }
};

Napi::Value CaptionerModel::Caption(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "caption(job) expects an object");
  if (!loaded_.load()) ThrowJs(env, "ERR_NOT_LOADED", "the captioner is not loaded");
  Napi::Object o = info[0].As<Napi::Object>();
  auto* w = new CaptionWorker(env, this, info.This().As<Napi::Object>());
  std::unique_ptr<CaptionWorker> guard(w);  // deleted if we throw before queueing
  Napi::Value img = o.Get("image");
  if (!img.IsObject()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "job.image is required");
  Napi::Object io = img.As<Napi::Object>();
  Napi::Value rgb = io.Get("rgb");
  if (rgb.IsBuffer()) {
    auto b = rgb.As<Napi::Buffer<unsigned char>>();
    int64_t wd = GetInt(io, "width", 0), ht = GetInt(io, "height", 0);
    if (wd <= 0 || ht <= 0 || static_cast<int64_t>(b.Length()) != wd * ht * 3) {
      ThrowJs(env, "ERR_INVALID_ARGUMENT", "raw image: width*height*3 bytes of RGB are required");
    }
    w->image.rgb.assign(b.Data(), b.Data() + b.Length());
    w->image.width = static_cast<uint32_t>(wd);
    w->image.height = static_cast<uint32_t>(ht);
  } else {
    ThrowJs(env, "ERR_INVALID_ARGUMENT", "job.image needs `rgb` (Buffer), `width` and `height`");
  }
  w->prefix = GetStr(o, "prefix");
  if (w->prefix.find(mtmd_get_marker(mctx_)) == std::string::npos) {
    ThrowJs(env, "ERR_INVALID_ARGUMENT", "job.prefix must contain the media marker");
  }
  Napi::Value sv = o.Get("suffixes");
  if (!sv.IsArray()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "job.suffixes must be an array of strings");
  Napi::Array sa = sv.As<Napi::Array>();
  for (uint32_t i = 0; i < sa.Length(); ++i) {
    Napi::Value v = sa.Get(i);
    if (!v.IsString()) ThrowJs(env, "ERR_INVALID_ARGUMENT", "job.suffixes must be strings");
    w->suffixes.push_back(v.As<Napi::String>().Utf8Value());
  }
  w->sharePrefix = GetBool(o, "sharePrefix", true);
  w->prefixKey = GetStr(o, "prefixKey");
  w->gen.maxTokens = GetInt(o, "maxTokens", 175);
  w->gen.minTokens = GetInt(o, "minTokens", 0);
  w->gen.temperature = static_cast<float>(GetNum(o, "temperature", 0.0));
  w->gen.topK = GetInt(o, "topK", 40);
  w->gen.topP = static_cast<float>(GetNum(o, "topP", 0.95));
  w->gen.seed = static_cast<uint32_t>(GetNum(o, "seed", 0));
  if (w->gen.maxTokens < 0 || w->gen.minTokens < 0 || !std::isfinite(w->gen.temperature)) {
    ThrowJs(env, "ERR_INVALID_ARGUMENT", "maxTokens/minTokens must be >= 0 and temperature finite");
  }
  int64_t job = static_cast<int64_t>(GetNum(o, "jobId", 0));
  Acquire(env);
  current_job_ = job;
  guard.release();
  Napi::Promise pr = w->Promise();
  w->Queue();
  return pr;
}

Napi::Value CaptionerModel::Cancel(const Napi::CallbackInfo& info) {
  if (info.Length() >= 1 && info[0].IsNumber())
    cancel_job_ = static_cast<int64_t>(info[0].As<Napi::Number>().DoubleValue());
  return info.Env().Undefined();
}

Napi::Value CaptionerModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (busy_.load()) ThrowJs(env, "ERR_BUSY", "cannot dispose while a call is running (cancel and await it first)");
  if (!disposed_.exchange(true)) FreeAll();
  return env.Undefined();
}

Napi::Value CaptionerModel::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("loaded", loaded_.load());
  r.Set("disposed", disposed_.load());
  r.Set("busy", busy_.load());
  r.Set("borrowed", borrowed_);
  return r;
}

Napi::Function CaptionerModel::Init(Napi::Env env) {
  return DefineClass(env, "CaptionerModel",
                     {
                         InstanceMethod("load", &CaptionerModel::Load),
                         InstanceMethod("caption", &CaptionerModel::Caption),
                         InstanceMethod("cancel", &CaptionerModel::Cancel),
                         InstanceMethod("dispose", &CaptionerModel::Dispose),
                         InstanceMethod("info", &CaptionerModel::Info),
                     });
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("mtmdMarker", Napi::String::New(env, mtmd_default_marker()));
  r.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  r.Set("systemInfo", Napi::String::New(env, llama_print_system_info()));
  size_t n_dev = ggml_backend_dev_count();
  Napi::Array devs = Napi::Array::New(env);
  for (size_t i = 0; i < n_dev; ++i) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    devs.Set(static_cast<uint32_t>(i),
             Napi::String::New(env, std::string(ggml_backend_dev_name(d)) + ": " + ggml_backend_dev_description(d)));
  }
  r.Set("devices", devs);
  return r;
}

// What this environment holds: lets tests (and curious callers) see that state is per environment.
Napi::Value EnvInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnvData* d = GetEnvData(env);
  Napi::Object r = Napi::Object::New(env);
  r.Set("objects", d->objects.load());
  r.Set("loaded", d->loaded.load());
  return r;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InitLogging();
  auto* data = new EnvData();
  env.SetInstanceData<EnvData>(data);  // deleted by Node when this environment is torn down
  napi_add_env_cleanup_hook(
      env, [](void* d) { static_cast<EnvData*>(d)->exiting = true; }, data);
  exports.Set("CaptionerModel", CaptionerModel::Init(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("envInfo", Napi::Function::New(env, EnvInfo));
  return exports;
}

}  // namespace

NODE_API_MODULE(xpsr_captioner, InitModule)
