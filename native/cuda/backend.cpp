// CudaBackend lifecycle, memory, weight upload and plan execution (CUDA graphs). Ops are in ops.cpp.
//  * Creation: context on the device, one non-blocking stream, a 32 MiB workspace (split-K partials,
//    GroupNorm statistics) and an 8 MiB f32 staging buffer, all allocated here once; kernel attributes
//    (dynamic shared memory above 48 KiB) set for this device.
//  * Weights: host f32 goes through the staging buffer and is converted/re-laid on the GPU: Conv
//    [K,C,R,S] -> f16 [K][R][S][Cp] (Cp = C rounded up to 8, zeros), Linear [N,K] -> f16 [N][Kp],
//    Embedding [V,D] -> f16, Vector -> f32.
//  * execute(plan): 1st call eager, 2nd call captured into a graph (cudaStreamCaptureModeThreadLocal, so
//    a forbidden call inside the capture fails loudly instead of being recorded wrongly) and launched,
//    later calls replay. If capture fails the plan runs eagerly from then on (graph_fallbacks in stats).
// Test: native/cuda/backend_test.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "backend_impl.h"
#include "check.h"

namespace xpsr::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr size_t kStagingBytes = 8u << 20;

bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0 || std::strcmp(v, "false") == 0);
}

std::string mib(size_t b) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(1);
  o << (double)b / (1024.0 * 1024.0) << " MiB";
  return o.str();
}

}  // namespace

CudaWeight::~CudaWeight() {
  if (!dev) return;
  int prev = 0;
  cudaGetDevice(&prev);
  if (prev != device) cudaSetDevice(device);
  cudaFree(dev);
  (void)cudaGetLastError();
  if (prev != device) cudaSetDevice(prev);
}

CudaBackend::CudaBackend(int device) : device_(device) {
  sync_each_op_ = env_flag("XPSR_CUDA_SYNC", false);
  graphs_enabled_ = env_flag("XPSR_CUDA_GRAPHS", true);
  strict_graphs_ = env_flag("XPSR_CUDA_GRAPH_STRICT", false);
  const std::string where = "cuda:" + std::to_string(device);
  try {
    check(cudaSetDevice(device), "selecting " + where);
    check(cudaFree(nullptr), "creating a context on " + where);
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "querying " + where);
    device_name_ = prop.name;
    total_mem_ = prop.totalGlobalMem;
    caps_.sms = prop.multiProcessorCount;
    caps_.cc_major = prop.major;
    caps_.cc_minor = prop.minor;
    caps_.smem_optin = (int)prop.sharedMemPerBlockOptin;
    // the tile policy's model of this device: the architecture's rates (tuning.h) with its own limits
    caps_.model = gpu_model_for(prop.major * 10 + prop.minor, prop.multiProcessorCount);
    caps_.model.regs_per_sm = prop.regsPerMultiprocessor;
    caps_.model.smem_per_sm = (int)prop.sharedMemPerMultiprocessor;
    caps_.model.smem_per_block = (int)prop.sharedMemPerBlockOptin;
    caps_.model.smem_reserved_per_cta = (int)prop.reservedSharedMemPerBlock;
    caps_.model.max_threads_per_sm = prop.maxThreadsPerMultiProcessor;
    caps_.model.max_ctas_per_sm = prop.maxBlocksPerMultiProcessor;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a stream on " + where);
    check(cudaMalloc(&ws_.ptr, kWorkspaceBytes), "allocating the " + mib(kWorkspaceBytes) + " workspace on " + where);
    ws_.bytes = kWorkspaceBytes;
    check(cudaMalloc(reinterpret_cast<void**>(&staging_), kStagingBytes), "allocating the upload staging buffer");
    staging_floats_ = kStagingBytes / sizeof(float);
    check(init_gemm_attributes(caps_), "configuring the GEMM kernels on " + where);
    check(init_conv_attributes(caps_), "configuring the conv kernels on " + where);
    check(init_attention_attributes(caps_), "configuring the attention kernels on " + where);
    // Every head dim of the SD-1.5 / XPSR networks has a tensor-core kernel that fits any sm_80+ device
    // (d=160: the 42 KiB variant). If one does not fit here, say so once instead of silently running
    // the ~10x slower SIMT kernel.
    for (int d : {40, 64, 80, 160})
      if (!(caps_.attn_dims & (1u << (d / 8))))
        std::fprintf(stderr,
                     "[xpsr cuda] %s: no tensor-core attention kernel for head dim %d fits (%d bytes of "
                     "shared memory per block); those calls use the SIMT kernel\n",
                     where.c_str(), d, caps_.smem_optin);
    update_mem_peak();
  } catch (...) {
    release();
    throw;
  }
}

CudaBackend::~CudaBackend() { release(); }

void CudaBackend::release() noexcept {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& kv : plans_)
    if (kv.second.exec) cudaGraphExecDestroy(kv.second.exec);
  plans_.clear();
  for (auto& kv : id_slots_)
    if (kv.second->pinned) cudaFreeHost(kv.second->pinned);
  id_slots_.clear();
  for (auto& kv : live_) cudaFree(kv.first);
  live_.clear();
  if (ws_.ptr) cudaFree(ws_.ptr);
  ws_ = {};
  if (staging_) cudaFree(staging_);
  staging_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  (void)cudaGetLastError();
}

void CudaBackend::make_current() const {
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess || cur != device_) check(cudaSetDevice(device_), "selecting " + name());
}

std::string CudaBackend::name() const { return "cuda:" + std::to_string(device_); }

std::string CudaBackend::description() const {
  std::ostringstream o;
  o << device_name_ << " (compute " << caps_.cc_major << "." << caps_.cc_minor << ", " << caps_.sms << " SMs, "
    << mib(total_mem_) << ")";
  return o.str();
}

std::string CudaBackend::tile_notes() const {
  std::ostringstream o;
  const TilePolicy pol = tile_policy();
  o << "tiles: " << tile_policy_name(pol) << " policy";
  const int v = attention_d160_variant(caps_);
  if (v < 0) {
    o << "; attention d160: SIMT kernel (no tensor-core variant fits " << caps_.smem_optin << " B of shared memory"
      << (pol == TilePolicy::Legacy ? " for the legacy tile" : "") << ")";
  } else {
    const AttnTile t = attn_tile(160, v);
    o << "; attention d160: v" << v << " (BC " << t.bc << (t.alias_q ? ", Q aliased" : "") << ", "
      << attn_smem_bytes(160, v) / 1024 << " KiB, " << caps_.d160_regs[v] << " regs, "
      << ctas_per_sm(caps_.model, KernelResources{t.warps * 32, caps_.d160_regs[v], (int)attn_smem_bytes(160, v)})
      << " CTAs/SM)";
  }
  o << "; gemm regs/thread (rows, conv):";
  for (int t = 0; t < kGemmTiles; ++t)
    o << " " << gemm_tile_name((GemmTile)t) << " " << caps_.gemm_regs[0][t] << "/" << caps_.gemm_regs[2][t];
  return o.str();
}

void CudaBackend::update_mem_peak() {
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) device_used_peak_ = std::max(device_used_peak_, tot - fr);
  (void)cudaGetLastError();
}

// ---- memory --------------------------------------------------------------------------------------------

void* CudaBackend::alloc(size_t bytes) {
  XPSR_CHECK(!capturing_, ErrorCode::Internal, "alloc() inside execute(): plans must allocate before running");
  make_current();
  if (bytes == 0) bytes = 1;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
      throw Error(ErrorCode::OutOfMemory, "CUDA out of memory on " + name() + ": allocating " + mib(bytes) + " (" +
                                              mib(fr) + " free of " + mib(tot) + ")");
    throw_cuda(e, "allocating " + mib(bytes) + " on " + name());
  }
  live_[p] = bytes;
  live_bytes_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  update_mem_peak();
  return p;
}

void CudaBackend::free(void* p) {
  if (!p) return;
  XPSR_CHECK(!capturing_, ErrorCode::Internal, "free() inside execute()");
  make_current();
  auto it = live_.find(p);
  XPSR_CHECK(it != live_.end(), ErrorCode::InvalidArgument, "free() of a pointer this backend did not allocate");
  live_bytes_ -= it->second;
  live_.erase(it);
  check(cudaFree(p), "freeing device memory");
}

void CudaBackend::upload_act(void* dst, const float* src, size_t n) {
  XPSR_CHECK(!capturing_, ErrorCode::InvalidArgument,
             "upload_act() inside execute(): a CUDA graph cannot replay host transfers; upload inputs before "
             "execute()");
  make_current();
  for (size_t off = 0; off < n; off += staging_floats_) {
    const size_t m = std::min(staging_floats_, n - off);
    check(cudaMemcpyAsync(staging_, src + off, m * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "upload_act of " + std::to_string(n) + " elements");
    check(launch_f32_to_f16(staging_, static_cast<uint16_t*>(dst) + off, m, stream_), "upload_act conversion");
  }
  check(cudaStreamSynchronize(stream_), "upload_act of " + std::to_string(n) + " elements");
}

void CudaBackend::download_act(float* dst, const void* src, size_t n) {
  XPSR_CHECK(!capturing_, ErrorCode::InvalidArgument,
             "download_act() inside execute(): a CUDA graph cannot replay host transfers; download after execute()");
  make_current();
  for (size_t off = 0; off < n; off += staging_floats_) {
    const size_t m = std::min(staging_floats_, n - off);
    check(launch_f16_to_f32(static_cast<const uint16_t*>(src) + off, staging_, m, stream_), "download_act conversion");
    check(cudaMemcpyAsync(dst + off, staging_, m * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "download_act of " + std::to_string(n) + " elements");
  }
  check(cudaStreamSynchronize(stream_), "download_act of " + std::to_string(n) + " elements");
}

void CudaBackend::fill_zero(void* dst, size_t n) {
  make_current();
  check(cudaMemsetAsync(dst, 0, n * 2, stream_), "fill_zero of " + std::to_string(n) + " elements");
}

// ---- weights -------------------------------------------------------------------------------------------

std::shared_ptr<Weight> CudaBackend::upload(const std::string& wname, WeightKind kind,
                                            const std::vector<int64_t>& shape, const float* data) {
  XPSR_CHECK(!capturing_, ErrorCode::Internal, "upload() inside execute()");
  make_current();
  int64_t numel = 1;
  for (int64_t d : shape) {
    XPSR_CHECK(d >= 0 && d < (int64_t(1) << 31), ErrorCode::ShapeMismatch, "weight ", wname, ": bad shape ",
               shape_str(shape));
    numel *= d;
  }
  auto w = std::make_shared<CudaWeight>();
  w->kind = kind;
  w->shape = shape;
  w->name = wname;
  w->device = device_;
  int rows = 0, inner = 0, C = 0, R = 1, S = 1;
  switch (kind) {
    case WeightKind::Conv:
      XPSR_CHECK(shape.size() == 4, ErrorCode::ShapeMismatch, "conv weight ", wname, " must be [K, C, R, S], got ",
                 shape_str(shape));
      rows = (int)shape[0];
      C = (int)shape[1];
      R = (int)shape[2];
      S = (int)shape[3];
      w->inner_pad = round_up(C, 8);
      w->bytes = (size_t)rows * R * S * w->inner_pad * 2;
      break;
    case WeightKind::Linear:
    case WeightKind::Embedding:
      XPSR_CHECK(shape.size() == 2, ErrorCode::ShapeMismatch, "weight ", wname, " must be 2-D, got ", shape_str(shape));
      rows = (int)shape[0];
      inner = (int)shape[1];
      w->inner_pad = kind == WeightKind::Linear ? round_up(inner, 8) : inner;
      w->bytes = (size_t)rows * w->inner_pad * 2;
      break;
    case WeightKind::Vector:
      w->inner_pad = (int)numel;
      w->bytes = (size_t)numel * sizeof(float);
      break;
  }
  if (w->bytes == 0) return w;
  const cudaError_t e = cudaMalloc(&w->dev, w->bytes);
  if (e != cudaSuccess) {
    w->dev = nullptr;
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation) {
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      (void)cudaGetLastError();
      throw Error(ErrorCode::OutOfMemory, "CUDA out of memory on " + name() + " uploading weight " + wname + " " +
                                              shape_str(shape) + " (" + mib(w->bytes) + "; " + mib(fr) + " free of " +
                                              mib(tot) + ", weights so far " + mib(weight_bytes_) + ")");
    }
    throw_cuda(e, "allocating weight " + wname);
  }
  const std::string what = "uploading weight " + wname + " " + shape_str(shape);
  if (kind == WeightKind::Vector) {
    check(cudaMemcpyAsync(w->dev, data, w->bytes, cudaMemcpyHostToDevice, stream_), what);
  } else {
    // whole source rows per chunk through the f32 staging buffer, converted/re-laid on the device
    const size_t row_floats = kind == WeightKind::Conv ? (size_t)C * R * S : (size_t)inner;
    const size_t rows_per_chunk = std::max<size_t>(1, staging_floats_ / std::max<size_t>(1, row_floats));
    XPSR_CHECK(row_floats <= staging_floats_, ErrorCode::Unsupported, "weight ", wname, " ", shape_str(shape),
               " has rows larger than the upload staging buffer");
    for (size_t r0 = 0; r0 < (size_t)rows; r0 += rows_per_chunk) {
      const int nr = (int)std::min(rows_per_chunk, (size_t)rows - r0);
      check(cudaMemcpyAsync(staging_, data + r0 * row_floats, nr * row_floats * sizeof(float), cudaMemcpyHostToDevice,
                            stream_),
            what);
      uint16_t* dst = static_cast<uint16_t*>(w->dev);
      if (kind == WeightKind::Conv)
        check(launch_conv_weight_f16(staging_, dst + r0 * R * S * w->inner_pad, nr, C, R, S, w->inner_pad, stream_),
              what);
      else check(launch_rows_f16(staging_, dst + r0 * w->inner_pad, nr, inner, w->inner_pad, stream_), what);
    }
  }
  check(cudaStreamSynchronize(stream_), what);
  weight_bytes_ += w->bytes;
  update_mem_peak();
  return w;
}

// ---- execution -----------------------------------------------------------------------------------------

void CudaBackend::synchronize() {
  make_current();
  check(cudaStreamSynchronize(stream_), "synchronising " + name());
}

void CudaBackend::run_eager(const std::function<void()>& launch_all) {
  launch_all();
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess)
    throw_cuda(e,
               "running a plan on " + name() + (sync_each_op_ ? "" : " (set XPSR_CUDA_SYNC=1 to name the failing op)"));
}

void CudaBackend::end_failed_capture() noexcept {
  capturing_ = false;
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream_, &g);
  if (g) cudaGraphDestroy(g);
  (void)cudaGetLastError();
}

void CudaBackend::execute(const void* plan_id, const std::function<void()>& launch_all) {
  XPSR_CHECK(!capturing_, ErrorCode::Internal, "execute() called from inside execute()");
  make_current();
  Plan& pl = plans_[plan_id];
  if (pl.exec) {
    check(cudaGraphLaunch(pl.exec, stream_), "replaying a plan's CUDA graph");
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess)
      throw_cuda(e,
                 "replaying a plan on " + name() + " (set XPSR_CUDA_GRAPHS=0 XPSR_CUDA_SYNC=1 to name the failing op)");
    ++graph_replays_;
    return;
  }
  if (pl.runs == 0 || pl.eager_only || !graphs_enabled_) {
    run_eager(launch_all);
    ++pl.runs;
    return;
  }
  // second call: capture
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "starting a CUDA graph capture");
  capturing_ = true;
  std::string failure;
  cudaGraph_t graph = nullptr;
  try {
    launch_all();
  } catch (const Error& e) {
    end_failed_capture();
    if (e.code() == ErrorCode::Cancelled || strict_graphs_) throw;
    failure = e.what();
  } catch (...) {
    end_failed_capture();
    throw;
  }
  if (failure.empty()) {
    capturing_ = false;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (e != cudaSuccess || !graph) {
      (void)cudaGetLastError();
      failure = std::string("ending the capture: ") + cudaGetErrorName(e);
    } else {
      // launches per run = kernel nodes of the captured graph (benchmarks report it per step)
      size_t nodes = 0;
      if (cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess && nodes > 0) {
        std::vector<cudaGraphNode_t> list(nodes);
        int kernels = 0;
        if (cudaGraphGetNodes(graph, list.data(), &nodes) == cudaSuccess)
          for (size_t i = 0; i < nodes; ++i) {
            cudaGraphNodeType type{};
            if (cudaGraphNodeGetType(list[i], &type) == cudaSuccess && type == cudaGraphNodeTypeKernel) ++kernels;
          }
        last_graph_nodes_ = (int)nodes;
        last_graph_kernels_ = kernels;
      }
      (void)cudaGetLastError();
      cudaGraphExec_t exec = nullptr;
      const cudaError_t ei = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      if (ei != cudaSuccess) {
        (void)cudaGetLastError();
        if (ei == cudaErrorMemoryAllocation) throw_cuda(ei, "instantiating a plan's CUDA graph");
        failure = std::string("instantiating the graph: ") + cudaGetErrorName(ei);
      } else {
        pl.exec = exec;
        ++graphs_captured_;
      }
    }
  }
  if (!failure.empty()) {
    if (strict_graphs_) throw Error(ErrorCode::Internal, "CUDA graph capture failed: " + failure);
    pl.eager_only = true;
    ++graph_fallbacks_;
    last_graph_failure_ = failure;
    run_eager(launch_all);
    ++pl.runs;
    return;
  }
  check(cudaGraphLaunch(pl.exec, stream_), "launching a plan's CUDA graph");
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) throw_cuda(e, "running a plan's CUDA graph on " + name());
  ++pl.runs;
}

void CudaBackend::forget_plan(const void* plan_id) {
  auto it = plans_.find(plan_id);
  if (it == plans_.end()) return;
  make_current();
  if (it->second.exec) cudaGraphExecDestroy(it->second.exec);
  plans_.erase(it);
}

CudaBackendStats CudaBackend::stats() const {
  CudaBackendStats s;
  s.act_bytes_live = live_bytes_;
  s.act_bytes_peak = peak_bytes_;
  s.workspace_bytes = ws_.bytes + staging_floats_ * sizeof(float);
  s.device_used_peak = device_used_peak_;
  s.graphs_captured = graphs_captured_;
  s.graph_replays = graph_replays_;
  s.graph_fallbacks = graph_fallbacks_;
  s.last_graph_failure = last_graph_failure_;
  s.last_graph_nodes = last_graph_nodes_;
  s.last_graph_kernels = last_graph_kernels_;
  s.tile_notes = tile_notes();
  return s;
}

}  // namespace xpsr::cuda
