// group_norm (+SiLU) and layer_norm vs the CPU backend: GroupNorm with 32 groups at every UNet width
// (320..2560 channels, incl. the up path's concat widths), 64x64 / odd 65x47 / 8x8 latents, eps 1e-5 and
// 1e-6, in place, a large mean offset (x = 50 + N(0,1): checks the cancellation-safe statistics), and the
// element path (C not a multiple of 8); LayerNorm on token rows of 320/640/1280/768 and odd/large widths.
// Tolerance: out_rounding_tol: statistics are f32 on both sides; the GPU rounds y to fp16 once.
// With the +50 offset the inputs themselves carry fp16 rounding of 2^-6 absolute, identical on both sides.
#include "cuda_test_util.h"

using namespace xpsr_cuda_test;

namespace {

// finalizes: -1 = the active policy's GroupNorm finalize; 0 = the parallel one; 1 = the legacy warp-per-group
// one. The CPU runs once; the GPU once per finalize, from the same input (in place: x is re-uploaded).
void run_gn(const char* name, int N, int HW, int C, int groups, bool silu, float eps, float mean, bool in_place,
            uint32_t seed, std::initializer_list<int> finalizes = {-1}) {
  gpu();
  Tensor2 x((size_t)N * HW * C), y((size_t)N * HW * C);
  const std::vector<float> xin = randn(x.n, seed, 1.0f, mean);
  x.set(xin);
  y.poison();
  std::vector<float> gamma = randn(C, seed + 1, 0.3f, 1.0f), beta = randn(C, seed + 2, 0.3f);
  Weight2 g = upload2("test.norm.weight", WeightKind::Vector, {C}, gamma);
  Weight2 b = upload2("test.norm.bias", WeightKind::Vector, {C}, beta);
  auto args = [&](int side) {
    GroupNormArgs a;
    a.x = side ? x.cp() : x.gp();
    a.y = in_place ? (side ? x.cp() : x.gp()) : (side ? y.cp() : y.gp());
    a.N = N;
    a.HW = HW;
    a.C = C;
    a.groups = groups;
    a.eps = eps;
    a.gamma = (side ? g.c : g.g).get();
    a.beta = (side ? b.c : b.g).get();
    a.silu = silu;
    return a;
  };
  cpu().group_norm(args(1));
  const Tensor2& out = in_place ? x : y;
  const auto ref = out.get_c();
  char label[200];
  std::snprintf(label, sizeof label, "group_norm %s [%d, %d, %d] g%d%s", name, N, HW, C, groups, silu ? " +silu" : "");
  const std::vector<float> nan(y.n, std::nanf(""));
  ForcedPlanReset reset;
  for (int f : finalizes) {
    gpu().upload_act(x.g, xin.data(), x.n);
    if (!in_place) gpu().upload_act(y.g, nan.data(), y.n);
    cuda::set_forced_gn_finalize(f);
    gpu().group_norm(args(0));
    gpu().synchronize();
    const char* which =
        f < 0 ? (cuda::gn_finalize_legacy() ? " [policy: legacy finalize]" : " [policy: parallel finalize]")
        : f   ? " [legacy finalize]"
              : " [parallel finalize]";
    expect_close(label + std::string(which), out.get_g(), ref, out_rounding_tol(ref));
  }
}

void run_ln(const char* name, int rows, int C, uint32_t seed, float mean = 0.f) {
  gpu();
  Tensor2 x((size_t)rows * C), y((size_t)rows * C);
  x.set(randn(x.n, seed, 1.0f, mean));
  y.poison();
  Weight2 g = upload2("test.ln.weight", WeightKind::Vector, {C}, randn(C, seed + 1, 0.3f, 1.0f));
  Weight2 b = upload2("test.ln.bias", WeightKind::Vector, {C}, randn(C, seed + 2, 0.3f));
  for (int side = 0; side < 2; ++side) {
    LayerNormArgs a;
    a.x = side ? x.cp() : x.gp();
    a.y = side ? y.cp() : y.gp();
    a.rows = rows;
    a.C = C;
    a.eps = 1e-5f;
    a.gamma = (side ? g.c : g.g).get();
    a.beta = (side ? b.c : b.g).get();
    (side ? cpu() : gpu()).layer_norm(a);
  }
  gpu().synchronize();
  const auto ref = y.get_c();
  expect_close(std::string("layer_norm ") + name, y.get_g(), ref, out_rounding_tol(ref));
}

}  // namespace

TEST(cuda_op_group_norm_unet_widths) {
  run_gn("64x64", 2, 64 * 64, 320, 32, true, 1e-5f, 0.f, false, 200);
  run_gn("32x32", 2, 32 * 32, 640, 32, true, 1e-5f, 0.f, false, 201);
  run_gn("16x16", 2, 16 * 16, 1280, 32, false, 1e-6f, 0.f, false, 202);
  run_gn("8x8 concat 2560", 2, 8 * 8, 2560, 32, true, 1e-5f, 0.f, false, 203);
  run_gn("odd 65x47 concat 960", 2, 65 * 47, 960, 32, true, 1e-5f, 0.f, false, 204);
  run_gn("odd 33x24 concat 1920", 2, 33 * 24, 1920, 32, true, 1e-5f, 0.f, false, 205);
}

TEST(cuda_op_group_norm_edge_cases) {
  run_gn("in place", 2, 32 * 32, 640, 32, true, 1e-5f, 0.f, true, 210);
  run_gn("mean offset 50", 2, 64 * 64, 320, 32, false, 1e-6f, 50.f, false, 211);
  run_gn("VAE 512 ch 64x64", 1, 64 * 64, 512, 32, true, 1e-6f, 0.f, false, 212);
  run_gn("tiny 32 ch 8 groups", 2, 81, 32, 8, true, 1e-5f, 0.f, false, 213);
  run_gn("element path C=20", 2, 100, 20, 4, true, 1e-5f, 0.f, false, 214);
  run_gn("one pixel", 2, 1, 320, 32, false, 1e-5f, 0.f, false, 215);
}

TEST(cuda_op_layer_norm_token_rows) {
  run_ln("8192x320", 8192, 320, 220);
  run_ln("2048x640", 2048, 640, 221);
  run_ln("512x1280", 512, 1280, 222);
  run_ln("CLIP 154x768 offset 20", 154, 768, 223, 20.f);
  run_ln("element path 77x20", 77, 20, 224);
  run_ln("wide 64x2560 (element path)", 64, 2560, 225);
  run_ln("tiny 18x32", 18, 32, 226);
}

// Small shapes of GroupNorm (both finalizes) / LayerNorm (16-byte and element paths) for compute-sanitizer.
TEST(cuda_op_small_norms) {
  run_gn("small", 1, 37, 64, 8, true, 1e-5f, 0.f, true, 230, {0, 1});
  run_gn("small element path", 2, 13, 12, 4, false, 1e-5f, 0.f, false, 231, {0, 1});
  run_gn("small 300 channels per group", 1, 9, 600, 2, false, 1e-5f, 0.f, false, 234, {0, 1});
  run_ln("small", 11, 64, 232);
  run_ln("small element path", 5, 13, 233);
}

// Both GroupNorm finalizes (the parallel CTA-per-group one and the legacy warp-per-group one) on the real
// SD-1.5 GroupNorms (every UNet width incl. the up path's concat widths, the VAE's 512 channels) and a
// large mean offset (the Chan merge of shifted sums must stay exact).
TEST(cuda_op_tiles_group_norm_finalize) {
  run_gn("64x64 320", 2, 64 * 64, 320, 32, true, 1e-5f, 0.f, false, 240, {0, 1});
  run_gn("32x32 640", 2, 32 * 32, 640, 32, true, 1e-5f, 0.f, false, 241, {0, 1});
  run_gn("16x16 1280", 2, 16 * 16, 1280, 32, true, 1e-5f, 0.f, false, 242, {0, 1});
  run_gn("8x8 2560", 2, 8 * 8, 2560, 32, true, 1e-5f, 0.f, false, 243, {0, 1});
  run_gn("64x64 960", 2, 64 * 64, 960, 32, true, 1e-5f, 0.f, false, 244, {0, 1});
  run_gn("VAE 128x128 512", 1, 128 * 128, 512, 32, true, 1e-6f, 0.f, false, 245, {0, 1});
  run_gn("offset 50 64x64 320", 2, 64 * 64, 320, 32, false, 1e-6f, 50.f, false, 246, {0, 1});
}
