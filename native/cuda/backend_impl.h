// CudaBackend: the Backend (native/engine/backend.h) over the kernels of this folder. Internal header shared
// by backend.cpp (lifecycle, memory, weights, execute/graphs) and ops.cpp (op validation and launches).
// One stream per backend; every op is enqueued on it, never allocates and may be captured into a graph.
// Env switches (diagnostics): XPSR_CUDA_SYNC=1 synchronises after each eager op so an asynchronous fault
// names its op; XPSR_CUDA_GRAPHS=0 never captures; XPSR_CUDA_GRAPH_STRICT=1 rethrows a failed capture
// instead of falling back to eager execution; XPSR_CUDA_TILES=legacy selects the first version's tile policy
// (tuning.h).
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "cuda_backend.h"
#include "kernels.h"

namespace xpsr::cuda {

// A weight in device memory, in the layout its kind needs (see upload()).
struct CudaWeight : Weight {
  void* dev = nullptr;  // f16 (Conv, Linear, Embedding) or f32 (Vector)
  size_t bytes = 0;
  int device = 0;
  int inner_pad = 0;  // Conv: Cp (channels rounded up to 8); Linear: Kp; Embedding: D; Vector: n
  ~CudaWeight() override;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;

  std::string name() const override;
  std::string description() const override;
  DType act_dtype() const override { return DType::F16; }

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void upload_act(void* dst, const float* src, size_t n) override;
  void download_act(float* dst, const void* src, size_t n) override;
  void fill_zero(void* dst, size_t n) override;

  std::shared_ptr<Weight> upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                 const float* data) override;
  size_t weight_bytes() const override { return weight_bytes_; }

  void conv2d(const Conv2dArgs& a) override;
  void linear(const LinearArgs& a) override;
  void group_norm(const GroupNormArgs& a) override;
  void layer_norm(const LayerNormArgs& a) override;
  void attention(const AttentionArgs& a) override;
  // Same-head-dim, same-causal problems run as ONE launch; anything else falls back to a loop of
  // attention() calls.
  void attention_multi(const AttentionArgs* problems, int count) override;
  void geglu(const GegluArgs& a) override;
  void unary(const UnaryArgs& a) override;
  void axpby(const AxpbyArgs& a) override;
  void channel_add(const ChannelAddArgs& a) override;
  void concat(const ConcatArgs& a) override;
  void slice(const SliceArgs& a) override;
  void upsample_nearest(const UpsampleArgs& a) override;
  void embedding(const EmbeddingArgs& a) override;

  void execute(const void* plan_id, const std::function<void()>& launch_all) override;
  void forget_plan(const void* plan_id) override;
  void synchronize() override;

  // Extensions (reached through cuda_backend.h free functions).
  CudaBackendStats stats() const;
  cudaStream_t stream() const { return stream_; }
  std::string tile_notes() const;  // policy, the d=160 variant and registers per tile on this device

 private:
  struct Plan {
    int runs = 0;
    bool eager_only = false;
    cudaGraphExec_t exec = nullptr;
  };
  // Host ids of an embedding call, copied to mapped pinned memory by a stream-ordered host callback so a
  // replayed graph re-reads the caller's (fixed) ids buffer.
  struct IdSlot {
    const int32_t* src = nullptr;
    int n = 0;
    int32_t* pinned = nullptr;      // host address
    int32_t* pinned_dev = nullptr;  // device address of the same memory
  };

  void make_current() const;
  void release() noexcept;
  void update_mem_peak();
  // After a launch: turn a failure into an Error naming the op; in XPSR_CUDA_SYNC mode also synchronise.
  template <typename F>
  void after_launch(cudaError_t e, const char* op, F&& describe);
  void run_eager(const std::function<void()>& launch_all);
  void end_failed_capture() noexcept;
  IdSlot& id_slot(const int32_t* ids, int n);
  static void CUDART_CB copy_ids_cb(void* slot);  // host node: slot->src -> slot->pinned

  int device_ = 0;
  std::string device_name_;
  DeviceCaps caps_;
  size_t total_mem_ = 0;
  cudaStream_t stream_ = nullptr;
  Workspace ws_;
  float* staging_ = nullptr;  // device f32 staging for uploads/downloads
  size_t staging_floats_ = 0;
  size_t weight_bytes_ = 0;
  std::unordered_map<void*, size_t> live_;
  size_t live_bytes_ = 0, peak_bytes_ = 0, device_used_peak_ = 0;
  std::unordered_map<const void*, Plan> plans_;
  std::map<std::pair<const int32_t*, int>, std::unique_ptr<IdSlot>> id_slots_;
  bool capturing_ = false;
  bool sync_each_op_ = false, graphs_enabled_ = true, strict_graphs_ = false;
  int graphs_captured_ = 0, graph_replays_ = 0, graph_fallbacks_ = 0;
  int last_graph_nodes_ = 0, last_graph_kernels_ = 0;
  std::string last_graph_failure_;
};

}  // namespace xpsr::cuda
