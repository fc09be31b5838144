// Graph builder and Plan: shape checks, liveness-based buffer reuse, views, dead-code elimination,
// inputs kept across runs, cancellation. Runs on the CPU backend.
#include <atomic>
#include <cmath>

#include "../test/test.h"
#include "engine/graph.h"

using namespace xpsr;

namespace {
std::shared_ptr<Weight> linear_weight(Backend& be, int n, int k, float v) {
  std::vector<float> w((size_t)n * k, 0.f);
  for (int i = 0; i < std::min(n, k); ++i) w[(size_t)i * k + i] = v;  // v * identity (padded)
  return be.upload("w", WeightKind::Linear, {n, k}, w.data());
}
}  // namespace

TEST(graph_chain_reuses_buffers_by_liveness) {
  auto be = make_cpu_backend(1);
  auto w = linear_weight(*be, 64, 64, 2.f);
  auto g = std::make_unique<Graph>(*be);
  Val x = g->input("x", Dims{1, 1, 256, 64});
  Val h = x;
  for (int i = 0; i < 12; ++i) h = g->linear(h, w.get());  // 12 intermediates of 64 KiB, each read once
  g->output("y", h);
  Plan p(std::move(g));
  // Without reuse: 13 buffers. With liveness: the input (kept for the whole run), the output and at most two
  // live intermediates at a time.
  const size_t one = 256 * 64 * 4;
  CHECK(p.naive_bytes() >= 13 * one);
  CHECK_MSG(p.arena_bytes() <= 4 * one, "arena " + std::to_string(p.arena_bytes()));
  std::vector<float> in(256 * 64, 1.f);
  p.set_input("x", in.data(), in.size());
  p.run();
  auto y = p.get_output("y");
  CHECK_CLOSE(y[0], 4096.0, 1e-3);  // 2^12
  CHECK_CLOSE(y[1], 4096.0, 1e-3);
}

TEST(graph_shape_errors_name_the_weight_and_shapes) {
  auto be = make_cpu_backend(1);
  auto w = linear_weight(*be, 8, 16, 1.f);
  Graph g(*be);
  Val x = g.input("x", Dims{2, 1, 5, 12});
  CHECK_THROWS_WITH(g.linear(x, w.get()), "expects 16 input features, input has 12");
  std::vector<float> cw(8 * 3 * 9, 0.f);
  auto conv = be->upload("conv_in.weight", WeightKind::Conv, {8, 3, 3, 3}, cw.data());
  Val img = g.input("img", Dims{1, 10, 10, 4});
  CHECK_THROWS_WITH(g.conv2d(img, conv.get(), nullptr),
                    "weight 'conv_in.weight' [8, 3, 3, 3] expects 3 input channels");
  Val a = g.input("a", Dims{1, 2, 2, 4}), b = g.input("b", Dims{1, 3, 2, 4});
  CHECK_THROWS_WITH(g.concat(a, b), "concat");
}

TEST(graph_views_dead_code_and_kept_inputs) {
  auto be = make_cpu_backend(1);
  auto w = linear_weight(*be, 6, 6, 1.f);
  auto g = std::make_unique<Graph>(*be);
  Val x = g->input("x", Dims{2, 1, 3, 6});
  Val unused = g->linear(x, w.get());  // never reaches an output: must not run
  (void)unused;
  Val c = g->cols(x, 2, 3);   // column view [2,1,3,3] with row stride 6
  Val s = g->slice(c, 1, 2);  // dense copy of columns 3..4 of x
  Val r = g->rows(x, 1, 1);   // batch entry 1 (a dense view)
  g->output("s", s);
  g->output("r", g->linear(r, w.get()));
  Plan p(std::move(g));
  CHECK(p.op_count() == 2);  // slice + the second linear; the unused linear was eliminated
  std::vector<float> in(36);
  for (int i = 0; i < 36; ++i) in[i] = (float)i;
  p.set_input("x", in.data(), in.size());
  p.run();
  auto sv = p.get_output("s");
  CHECK(sv.size() == 12);
  CHECK(sv[0] == 3.f && sv[1] == 4.f && sv[2] == 9.f);  // row 0: x[3], x[4]; row 1: x[9]
  auto rv = p.get_output("r");
  CHECK(rv.size() == 18 && rv[0] == 18.f && rv[17] == 35.f);  // identity of batch entry 1
  // Inputs keep their slot between runs: running again without set_input gives the same result.
  CHECK(p.has_input("x"));
  p.run();
  CHECK(p.get_output("r") == rv);
}

TEST(graph_run_stops_when_cancelled) {
  auto be = make_cpu_backend(1);
  auto w = linear_weight(*be, 16, 16, 1.f);
  auto g = std::make_unique<Graph>(*be);
  Val h = g->input("x", Dims{1, 1, 4, 16});
  for (int i = 0; i < 4; ++i) h = g->linear(h, w.get());
  g->output("y", h);
  Plan p(std::move(g));
  std::vector<float> in(64, 1.f);
  p.set_input("x", in.data(), in.size());
  std::atomic<bool> cancel{true};
  CHECK_THROWS_WITH(p.run(&cancel), "cancelled");
  cancel = false;
  p.run(&cancel);
  CHECK(p.get_output("y")[0] == 1.f);
}
