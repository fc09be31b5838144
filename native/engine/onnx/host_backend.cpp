// Host-weight backend for ONNX export: stores uploads, executes nothing.
#include "host_backend.h"

#include <cstdlib>

namespace xpsr::onnx {

namespace {

[[noreturn]] void no_ops() { fail(ErrorCode::Internal, "the ONNX export backend holds weights only and runs no ops"); }

class HostWeightBackend : public Backend {
 public:
  std::string name() const override { return "onnx-export"; }
  std::string description() const override { return "host f32 weights for ONNX export (executes nothing)"; }
  DType act_dtype() const override { return DType::F32; }
  void* alloc(size_t bytes) override {
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) fail(ErrorCode::OutOfMemory, "host allocation of ", bytes, " bytes failed");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void upload_act(void*, const float*, size_t) override { no_ops(); }
  void download_act(float*, const void*, size_t) override { no_ops(); }
  void fill_zero(void*, size_t) override { no_ops(); }
  std::shared_ptr<Weight> upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                 const float* data) override {
    auto w = std::make_shared<HostWeight>();
    w->kind = kind, w->shape = shape, w->name = name, w->owner = owner;
    size_t n = 1;
    for (auto d : shape) n *= (size_t)d;
    w->data.assign(data, data + n);
    bytes_ += n * sizeof(float);
    return w;
  }
  size_t weight_bytes() const override { return bytes_; }
  std::string owner;
  void conv2d(const Conv2dArgs&) override { no_ops(); }
  void linear(const LinearArgs&) override { no_ops(); }
  void group_norm(const GroupNormArgs&) override { no_ops(); }
  void layer_norm(const LayerNormArgs&) override { no_ops(); }
  void attention(const AttentionArgs&) override { no_ops(); }
  void geglu(const GegluArgs&) override { no_ops(); }
  void unary(const UnaryArgs&) override { no_ops(); }
  void axpby(const AxpbyArgs&) override { no_ops(); }
  void channel_add(const ChannelAddArgs&) override { no_ops(); }
  void concat(const ConcatArgs&) override { no_ops(); }
  void slice(const SliceArgs&) override { no_ops(); }
  void upsample_nearest(const UpsampleArgs&) override { no_ops(); }
  void embedding(const EmbeddingArgs&) override { no_ops(); }
  void execute(const void*, const std::function<void()>&) override { no_ops(); }
  void synchronize() override {}

 private:
  size_t bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_host_weight_backend() { return std::make_unique<HostWeightBackend>(); }

void set_weight_owner(Backend& be, const std::string& owner) {
  auto* h = dynamic_cast<HostWeightBackend*>(&be);
  if (!h) fail(ErrorCode::Internal, "set_weight_owner: not the ONNX export backend");
  h->owner = owner;
}

const HostWeight& host_weight(const Weight* w) {
  auto* h = dynamic_cast<const HostWeight*>(w);
  if (!h) fail(ErrorCode::Internal, "onnx export: weight '", w ? w->name : "?", "' is not held on the host");
  return *h;
}

}  // namespace xpsr::onnx
