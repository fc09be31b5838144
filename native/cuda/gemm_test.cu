// linear (tensor-core GEMM) vs the CPU backend on the SD-1.5 transformer shapes: projections at the four
// UNet levels (M = 2 x 4096 / 1024 / 256 / 64 tokens), GEGLU in/out, text K/V (M = 2 x 77), the time
// embedding (M = 2), packed q|k|v column slices, odd offsets (element-load path), odd K, in-place residual.
// Tolerance: out_rounding_tol (1 fp16 ulp relative + rms/4096): inputs and weights are fp16 values on both
// sides, accumulation is f32 on both, so the GPU's only extra error is rounding y to fp16 once.
// Every line names the plan that ran ([tile xsplits], tuning.h); cuda_op_tiles_linear_sd_shapes runs every
// tile with and without split-K on the real shapes against one CPU reference.
#include "cuda_test_util.h"

using namespace xpsr_cuda_test;

namespace {

struct LinCase {
  const char* name;
  int M, K, N;
  int ldx = 0, x_off = 0;  // ldx 0: dense
  int ldy = 0, y_off = 0;
  bool bias = true, residual = false, residual_in_place = false;
};

// Runs the case on the CPU once and on the GPU once per plan (GemmPlans: {-1, 1} = the policy's choice).
void run_linear(const LinCase& c, uint32_t seed, const GemmPlans& plans = policy_plan()) {
  gpu();
  const int ldx = c.ldx ? c.ldx : c.K, ldy = c.ldy ? c.ldy : c.N;
  const size_t nx = (size_t)c.M * ldx + c.x_off, ny = (size_t)c.M * ldy + c.y_off;
  Tensor2 x(nx), y(ny), r((size_t)c.M * c.N);
  x.set(randn(nx, seed));
  const std::vector<float> background = randn(ny, seed + 1);  // columns outside the slice must stay unchanged
  y.set(background);
  r.set(randn(r.n, seed + 2));
  Weight2 w = rand_weight("test.linear.weight", WeightKind::Linear, {c.N, c.K}, seed + 3, 1.0f / std::sqrt((float)c.K));
  Weight2 b = rand_weight("test.linear.bias", WeightKind::Vector, {c.N}, seed + 4, 0.5f);
  auto args = [&](int side) {
    LinearArgs a;
    a.x = side ? x.cp(c.x_off) : x.gp(c.x_off);
    a.M = c.M;
    a.K = c.K;
    a.ldx = ldx;
    a.w = (side ? w.c : w.g).get();
    a.b = c.bias ? (side ? b.c : b.g).get() : nullptr;
    a.y = side ? y.cp(c.y_off) : y.gp(c.y_off);
    a.N = c.N;
    a.ldy = ldy;
    if (c.residual_in_place) {
      a.residual = a.y;
      a.ldr = ldy;
    } else if (c.residual) {
      a.residual = side ? r.cp() : r.gp();
      a.ldr = c.N;
    }
    return a;
  };
  cpu().linear(args(1));
  const auto ref = y.get_c();
  ForcedPlanReset reset;
  for (const auto& [tile, splits] : plans) {
    gpu().upload_act(y.g, background.data(), ny);  // the in-place residual reads y
    cuda::set_forced_gemm_plan(tile, splits);
    gpu().linear(args(0));
    gpu().synchronize();
    expect_close(std::string(c.name) + " " + last_plan_label(tile), y.get_g(), ref, out_rounding_tol(ref));
  }
}

}  // namespace

TEST(cuda_op_linear_unet_projections) {
  run_linear({"level0 qkv/out 8192x320->320 +bias+residual", 8192, 320, 320, 0, 0, 0, 0, true, true}, 10);
  run_linear({"level1 1024 tok 2048x640->640", 2048, 640, 640}, 11);
  run_linear({"level2 256 tok 512x1280->1280", 512, 1280, 1280}, 12);
  run_linear({"mid 64 tok 128x1280->1280", 128, 1280, 1280, 0, 0, 0, 0, true, true}, 13);
}

TEST(cuda_op_linear_feed_forward) {
  run_linear({"GEGLU proj 8192x320->2560", 8192, 320, 2560}, 20);
  run_linear({"FF out 8192x1280->320 +residual", 8192, 1280, 320, 0, 0, 0, 0, true, true}, 21);
  run_linear({"GEGLU proj level2 512x1280->10240", 512, 1280, 10240}, 22);
  run_linear({"FF out level2 512x5120->1280", 512, 5120, 1280}, 23);
}

TEST(cuda_op_linear_text_and_time) {
  run_linear({"text K/V 154x768->320 (no bias)", 154, 768, 320, 0, 0, 0, 0, false}, 30);
  run_linear({"text K/V 154x768->1280", 154, 768, 1280, 0, 0, 0, 0, false}, 31);
  run_linear({"time emb 2x320->1280", 2, 320, 1280}, 32);
  run_linear({"time emb 2x1280->1280", 2, 1280, 1280}, 33);
  run_linear({"CLIP fc1 154x768->3072", 154, 768, 3072}, 34);
}

TEST(cuda_op_linear_slices_and_odd_layouts) {
  // packed q|k|v: read the k slice of a [M, 960] buffer, write into the v slice of another
  run_linear({"slice in/out ldx 960 off 320, ldy 960 off 640", 4096, 320, 320, 960, 320, 960, 640}, 40);
  run_linear({"odd x offset (element loads)", 1000, 320, 320, 961, 1}, 41);
  run_linear({"odd K=3 (tiny)", 77, 3, 16}, 42);
  run_linear({"odd N=77, odd y stride", 333, 64, 77, 0, 0, 79, 1}, 43);
  run_linear({"tiny model 2x32->64", 2, 32, 64}, 44);
  run_linear({"residual in place (y == residual)", 2048, 640, 640, 0, 0, 0, 0, true, false, true}, 45);
}

// Review additions. The legacy policy on 132 SMs splits M 154 N 320 K 2560 into 8 and M 77 N 77 K 5120
// into 16 (64x64 tile, N and M not tile multiples); the forced plans below make these splits on any GPU.
// They check that every split's partial is written (also the zeros of a split whose k-range is short), the
// reduce applies bias + residual once, and an in-place residual (y == residual) is read before it is written.
TEST(cuda_op_linear_split_k_and_k_tails) {
  run_linear({"split-K 154x2560->320 +residual in place", 154, 2560, 320, 0, 0, 0, 0, true, false, true}, 50,
             {{-1, 1}, {(int)cuda::GemmTile::T64x64, 8}});
  run_linear({"split-K 77x5120->77 odd N, odd M", 77, 5120, 77}, 51, {{-1, 1}, {(int)cuda::GemmTile::T64x64, 16}});
  run_linear({"split-K element loads (odd x offset) 154x2560->320", 154, 2560, 320, 2561, 1}, 52);
  run_linear({"split-K 128x3072->640 CLIP-fc2-like +residual", 128, 3072, 640, 0, 0, 0, 0, true, true}, 53);
  // K not a multiple of the 32-wide k-tile on the 16-byte path: chunks past K inside the last tile
  run_linear({"K=40 16-byte path (partial last k-tile)", 300, 40, 64}, 54);
  run_linear({"K=72 16-byte path", 77, 72, 136}, 55);
  run_linear({"K=13 element path, N=4", 9, 13, 4}, 56);
  run_linear({"M=1 row", 1, 320, 1280}, 57);
}

// Small shapes of the GEMM paths (16-byte and element loads, split-K) on EVERY tile with and without
// split-K, for compute-sanitizer runs (gpu-check runs the "cuda_op_small_" tests under memcheck/racecheck).
TEST(cuda_op_small_linear) {
  run_linear({"small vec 200x72->136", 200, 72, 136}, 60, every_plan({1, 2}));
  run_linear({"small element loads 70x33->40 (odd offset)", 70, 33, 40, 35, 1}, 61, every_plan({1, 2}));
  run_linear({"small split-K 77x2560->77 +residual in place", 77, 2560, 77, 0, 0, 0, 0, true, false, true}, 62,
             every_plan({1, 5}));
}

// Every tile (tuning.h: the legacy 64x32 / 32x32 warp tiles and the 64x64 ones), unsplit and split, on the
// real SD-1.5 linear shapes (batch 2: M = 2 x tokens), each against one CPU reference.
TEST(cuda_op_tiles_linear_sd_shapes) {
  const GemmPlans plans = every_plan({1, 3});
  run_linear({"tiles level0 8192x320->320 +residual", 8192, 320, 320, 0, 0, 0, 0, true, true}, 70, plans);
  run_linear({"tiles GEGLU in 8192x320->2560", 8192, 320, 2560}, 71, plans);
  run_linear({"tiles FF out 8192x1280->320", 8192, 1280, 320}, 72, plans);
  run_linear({"tiles level1 2048x640->640", 2048, 640, 640}, 73, plans);
  run_linear({"tiles FF out 2048x2560->640 +residual", 2048, 2560, 640, 0, 0, 0, 0, true, true}, 74, plans);
  run_linear({"tiles level2 512x1280->1280", 512, 1280, 1280}, 75, plans);
  run_linear({"tiles FF out 512x5120->1280", 512, 5120, 1280}, 76, plans);
  run_linear({"tiles mid 128x1280->1280", 128, 1280, 1280}, 77, plans);
  run_linear({"tiles text K/V 154x768->320 (no bias)", 154, 768, 320, 0, 0, 0, 0, false}, 78, plans);
  run_linear({"tiles time emb 2x1280->1280", 2, 1280, 1280}, 79, plans);
}
