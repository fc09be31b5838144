// CudaBackend behaviour: device errors (runs without a GPU too), identity, argument errors that name the op
// and shapes, out-of-memory that leaves the backend usable, and execute(): eager -> captured graph ->
// replays that see new input contents, capture fallback, forget_plan.
#include <cstring>

#include "cuda_test_util.h"

using namespace xpsr_cuda_test;

TEST(cuda_op_missing_device_is_device_unavailable) {
  // Runs on every machine: with no GPU the error explains why, with GPUs index 999 does not exist.
  std::string why;
  const auto devs = list_cuda_devices(&why);
  if (devs.empty()) CHECK_MSG(!why.empty(), "list_cuda_devices gave no reason");
  bool thrown = false;
  try {
    make_cuda_backend(999);
  } catch (const Error& e) {
    thrown = true;
    CHECK(e.code() == ErrorCode::DeviceUnavailable);
    CHECK(std::strlen(e.what()) > 10);
    std::printf("    make_cuda_backend(999): %s\n", e.what());
  }
  CHECK(thrown);
}

TEST(cuda_op_backend_identity) {
  Backend& g = gpu();
  CHECK(g.act_dtype() == DType::F16);
  CHECK(g.name() == "cuda:0");
  std::printf("    %s: %s\n", g.name().c_str(), g.description().c_str());
  const CudaBackendStats st = cuda_backend_stats(g);
  CHECK(st.tile_notes.find("policy") != std::string::npos);
  std::printf("    %s\n", st.tile_notes.c_str());
}

TEST(cuda_op_errors_name_op_and_shapes) {
  Backend& g = gpu();
  Weight2 w = rand_weight("down_blocks.0.resnets.0.conv1.weight", WeightKind::Conv, {320, 320, 3, 3}, 500, 0.05f);
  Tensor2 x((size_t)2 * 8 * 8 * 320), y((size_t)2 * 8 * 8 * 320);
  Conv2dArgs a;
  a.x = x.gp();
  a.N = 2;
  a.H = 8;
  a.W = 8;
  a.C = 320;
  a.w = w.g.get();
  a.K = 320;
  a.y = y.gp();
  a.P = 9;  // wrong
  a.Q = 8;
  CHECK_THROWS_WITH(g.conv2d(a), "conv2d");
  CHECK_THROWS_WITH(g.conv2d(a), "expected 8x8");
  a.P = 8;
  a.C = 640;
  CHECK_THROWS_WITH(g.conv2d(a), "down_blocks.0.resnets.0.conv1.weight");
  a.C = 320;
  a.w = w.c.get();  // a CPU weight
  CHECK_THROWS_WITH(g.conv2d(a), "not uploaded to this CUDA backend");
  GroupNormArgs gn;
  gn.x = gn.y = x.gp();
  gn.N = 2;
  gn.HW = 64;
  gn.C = 320;
  gn.groups = 33;
  CHECK_THROWS_WITH(g.group_norm(gn), "multiple of groups");
  AttentionArgs at;
  at.q = at.k = at.v = at.o = x.gp();
  at.B = 1;
  at.Lq = at.Lk = 8;
  at.heads = 1;
  at.head_dim = 1024;
  at.ldq = at.ldk = at.ldv = at.ldo = 1024;
  CHECK_THROWS_WITH(g.attention(at), "head_dim 1024");
}

TEST(cuda_op_out_of_memory_keeps_backend_usable) {
  Backend& g = gpu();
  bool oom = false;
  try {
    g.alloc((size_t)1 << 50);  // 1 PiB
  } catch (const Error& e) {
    oom = e.code() == ErrorCode::OutOfMemory;
    std::printf("    %s\n", e.what());
  }
  CHECK(oom);
  // still usable
  Tensor2 a(1024), y(1024);
  a.set(randn(1024, 501));
  g.axpby({a.gp(), nullptr, y.gp(), 1024, 2.0f, 0.0f});
  const auto out = y.get_g();
  const auto in = a.get_g();
  for (size_t i = 0; i < 1024; ++i) CHECK_CLOSE(out[i], 2.0f * in[i], 1e-6);
}

namespace {

// A small plan touching the main ops: linear -> group_norm(silu) -> attention -> embedding + axpby.
struct MiniPlan {
  Weight2 w = rand_weight("plan.linear.weight", WeightKind::Linear, {64, 64}, 510, 0.125f);
  Weight2 gam = upload2("plan.gn.weight", WeightKind::Vector, {64}, randn(64, 511, 0.1f, 1.0f));
  Weight2 bet = upload2("plan.gn.bias", WeightKind::Vector, {64}, randn(64, 512, 0.1f));
  Weight2 emb = rand_weight("plan.embedding.weight", WeightKind::Embedding, {100, 64}, 513, 1.0f);
  Tensor2 x{2 * 256 * 64}, h{2 * 256 * 64}, o{2 * 256 * 64}, e{2 * 256 * 64};
  std::vector<int32_t> ids = std::vector<int32_t>(512, 0);
  void run(Backend& b, bool c) {
    LinearArgs l;
    l.x = c ? x.cp() : x.gp();
    l.M = 512;
    l.K = 64;
    l.ldx = 64;
    l.w = (c ? w.c : w.g).get();
    l.y = c ? h.cp() : h.gp();
    l.N = 64;
    l.ldy = 64;
    b.linear(l);
    GroupNormArgs g;
    g.x = g.y = c ? h.cp() : h.gp();
    g.N = 2;
    g.HW = 256;
    g.C = 64;
    g.groups = 8;
    g.gamma = (c ? gam.c : gam.g).get();
    g.beta = (c ? bet.c : bet.g).get();
    g.silu = true;
    b.group_norm(g);
    AttentionArgs a;
    a.q = a.k = a.v = c ? h.cp() : h.gp();
    a.o = c ? o.cp() : o.gp();
    a.ldq = a.ldk = a.ldv = a.ldo = 64;
    a.B = 2;
    a.Lq = a.Lk = 256;
    a.heads = 2;
    a.head_dim = 32;
    a.scale = 0.17677669f;
    b.attention(a);
    b.embedding({(c ? emb.c : emb.g).get(), ids.data(), 512, c ? e.cp() : e.gp()});
    b.axpby({c ? o.cp() : o.gp(), c ? e.cp() : e.gp(), c ? o.cp() : o.gp(), o.n, 1.0f, 0.5f});
  }
};

}  // namespace

TEST(cuda_op_execute_captures_and_replays) {
  Backend& g = gpu();
  MiniPlan p;
  const auto before = cuda_backend_stats(g);
  const int tag = 0;
  for (int call = 0; call < 4; ++call) {
    p.x.set(randn(p.x.n, 520 + call));  // new contents, same pointers
    for (int i = 0; i < 512; ++i) p.ids[i] = (i * 7 + call * 13) % 100;
    g.execute(&tag, [&] { p.run(g, false); });
    p.run(cpu(), true);
    const auto ref = p.o.get_c();
    expect_close("plan call " + std::to_string(call), p.o.get_g(), ref, {1.0 / 256, rms(ref) / 128});
  }
  const auto after = cuda_backend_stats(g);
  std::printf("    graphs captured %d, replays %d, fallbacks %d %s\n", after.graphs_captured - before.graphs_captured,
              after.graph_replays - before.graph_replays, after.graph_fallbacks - before.graph_fallbacks,
              after.last_graph_failure.c_str());
  CHECK(after.graphs_captured - before.graphs_captured == 1);
  CHECK(after.graph_replays - before.graph_replays == 2);
  CHECK(after.graph_fallbacks == before.graph_fallbacks);
  g.forget_plan(&tag);
  g.execute(&tag, [&] { p.run(g, false); });  // eager again after forget
  CHECK(cuda_backend_stats(g).graph_replays == after.graph_replays);
  g.forget_plan(&tag);
}

TEST(cuda_op_execute_falls_back_when_capture_is_impossible) {
  Backend& g = gpu();
  Tensor2 x(4096), y(4096);
  std::vector<float> host = randn(4096, 530);
  const int tag = 0;
  const auto before = cuda_backend_stats(g);
  for (int call = 0; call < 3; ++call) {
    host[0] = (float)call;
    g.execute(&tag, [&] {
      g.upload_act(x.gp(), host.data(), host.size());  // a host transfer: cannot live in a graph
      g.unary({x.gp(), y.gp(), 4096, UnaryOp::Silu});
    });
    const auto out = y.get_g();
    CHECK_CLOSE(out[0], round_f16((float)call / (1.0f + std::exp(-(float)call))), 2e-3);
  }
  const auto after = cuda_backend_stats(g);
  std::printf("    fallback reason: %s\n", after.last_graph_failure.c_str());
  CHECK(after.graph_fallbacks == before.graph_fallbacks + 1);
  g.forget_plan(&tag);
}
