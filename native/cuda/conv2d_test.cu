// conv2d (implicit GEMM) vs the CPU backend on the SD-1.5 / XPSR shapes: 3x3 convs at 320/640/1280 channels
// on 64x64 / 32x32 / 16x16 / 8x8 latents (batch 2) and an odd 65x47 latent, the up path's concat widths,
// stride-2 downsamplers (padding 1, and the VAE's (0,1,0,1)), 1x1 shortcuts / zero convs, the 4- and
// 3-channel input convs (element-gather path), conv_out to 4 channels, bias and fused residual.
// Tolerance: out_rounding_tol (see gemm_test.cu): the reduction is f32 on both sides over identical fp16
// inputs and weights, the GPU rounds y to fp16 once (residual added before that rounding).
// Every line names the plan that ran; cuda_op_tiles_conv_sd_shapes runs every tile, unsplit and split.
#include "cuda_test_util.h"

using namespace xpsr_cuda_test;

namespace {

struct ConvCase {
  const char* name;
  int N, H, W, C, K, R = 3, S = 3, stride = 1;
  int pt = 1, pl = 1, pb = 1, pr = 1;
  bool bias = true, residual = false;
};

// The case on the CPU once and on the GPU once per plan (GemmPlans, cuda_test_util.h).
void run_conv(const ConvCase& c, uint32_t seed, const GemmPlans& plans = policy_plan()) {
  gpu();
  const int P = (c.H + c.pt + c.pb - c.R) / c.stride + 1, Q = (c.W + c.pl + c.pr - c.S) / c.stride + 1;
  Tensor2 x((size_t)c.N * c.H * c.W * c.C), y((size_t)c.N * P * Q * c.K), r((size_t)c.N * P * Q * c.K);
  x.set(randn(x.n, seed));
  y.poison();
  r.set(randn(r.n, seed + 1));
  Weight2 w = rand_weight("test.conv.weight", WeightKind::Conv, {c.K, c.C, c.R, c.S}, seed + 2,
                          1.0f / std::sqrt((float)(c.C * c.R * c.S)));
  Weight2 b = rand_weight("test.conv.bias", WeightKind::Vector, {c.K}, seed + 3, 0.5f);
  auto args = [&](int side) {
    Conv2dArgs a;
    a.x = side ? x.cp() : x.gp();
    a.N = c.N;
    a.H = c.H;
    a.W = c.W;
    a.C = c.C;
    a.w = (side ? w.c : w.g).get();
    a.b = c.bias ? (side ? b.c : b.g).get() : nullptr;
    a.K = c.K;
    a.R = c.R;
    a.S = c.S;
    a.stride = c.stride;
    a.pad_top = c.pt;
    a.pad_left = c.pl;
    a.pad_bottom = c.pb;
    a.pad_right = c.pr;
    a.residual = c.residual ? (side ? r.cp() : r.gp()) : nullptr;
    a.y = side ? y.cp() : y.gp();
    a.P = P;
    a.Q = Q;
    return a;
  };
  cpu().conv2d(args(1));
  const auto ref = y.get_c();
  char name[200];
  std::snprintf(name, sizeof name, "%s [%d,%d,%d,%d]->[%d,%d,%d,%d]", c.name, c.N, c.C, c.H, c.W, c.N, c.K, P, Q);
  const std::vector<float> nan(y.n, std::nanf(""));
  ForcedPlanReset reset;
  for (const auto& [tile, splits] : plans) {
    gpu().upload_act(y.g, nan.data(), y.n);  // an element a plan forgets to write fails the comparison
    cuda::set_forced_gemm_plan(tile, splits);
    gpu().conv2d(args(0));
    gpu().synchronize();
    expect_close(std::string(name) + " " + last_plan_label(tile), y.get_g(), ref, out_rounding_tol(ref));
  }
}

}  // namespace

TEST(cuda_op_conv3x3_unet_levels) {
  run_conv({"3x3 320 64x64", 2, 64, 64, 320, 320}, 100);
  run_conv({"3x3 640 32x32 +residual", 2, 32, 32, 640, 640, 3, 3, 1, 1, 1, 1, 1, true, true}, 101);
  run_conv({"3x3 1280 16x16", 2, 16, 16, 1280, 1280}, 102);
  run_conv({"3x3 1280 8x8 (split-K)", 2, 8, 8, 1280, 1280, 3, 3, 1, 1, 1, 1, 1, true, true}, 103);
  run_conv({"3x3 320->640 32x32", 2, 32, 32, 320, 640}, 104);
}

TEST(cuda_op_conv3x3_odd_latent_and_up_path) {
  run_conv({"3x3 320 odd 65x47 +residual", 2, 65, 47, 320, 320, 3, 3, 1, 1, 1, 1, 1, true, true}, 110);
  run_conv({"up-path 2560->1280 8x8", 2, 8, 8, 2560, 1280}, 111);
  run_conv({"up-path 1920->640 odd 33x24", 2, 33, 24, 1920, 640}, 112);
  run_conv({"up-path 640->320 odd 65x47", 2, 65, 47, 640, 320}, 113);
}

TEST(cuda_op_conv_stride2_and_vae_padding) {
  run_conv({"downsample s2 p1 320 64x64", 2, 64, 64, 320, 320, 3, 3, 2}, 120);
  run_conv({"downsample s2 p1 640 odd 33x24", 2, 33, 24, 640, 640, 3, 3, 2}, 121);
  run_conv({"VAE downsample s2 pad(0,1,0,1) 128 64x64", 1, 64, 64, 128, 128, 3, 3, 2, 0, 0, 1, 1}, 122);
  run_conv({"VAE downsample s2 pad(0,1,0,1) 256 odd 65x47", 1, 65, 47, 256, 256, 3, 3, 2, 0, 0, 1, 1}, 123);
  run_conv({"cond-embed s2 16->32 128x128", 2, 128, 128, 16, 32, 3, 3, 2}, 124);
  run_conv({"cond-embed s2 96->256 odd 33x24", 2, 33, 24, 96, 256, 3, 3, 2}, 125);
}

TEST(cuda_op_conv_pointwise_and_odd_channels) {
  run_conv({"1x1 shortcut 640->320 +residual", 2, 32, 32, 640, 320, 1, 1, 1, 0, 0, 0, 0, true, true}, 130);
  run_conv({"1x1 zero conv 320->320 odd", 2, 65, 47, 320, 320, 1, 1, 1, 0, 0, 0, 0}, 131);
  run_conv({"conv_in 4->320 (element gather)", 2, 65, 47, 4, 320}, 132);
  run_conv({"cond conv_in 3->16 (element gather)", 2, 128, 96, 3, 16}, 133);
  run_conv({"conv_out 320->4", 2, 64, 64, 320, 4}, 134);
  run_conv({"to_rgb 32->3 odd K", 1, 40, 24, 32, 3}, 135);
  run_conv({"1x1 4->4 (VAE post-quant)", 1, 16, 16, 4, 4, 1, 1, 1, 0, 0, 0, 0}, 136);
  run_conv({"tiny 32->32", 2, 9, 9, 32, 32}, 137);
}

// Review additions: the element-gather path with stride 2 and the VAE's asymmetric (0,1,0,1) padding,
// 1x1 spatial inputs (every tap but the centre is padding), a 1x1 conv with stride 2 (implicit-GEMM path,
// not the pointwise GEMM), and a tiny channel count on the 16-byte path (C = 8).
TEST(cuda_op_conv_edge_paths) {
  run_conv({"s2 pad(0,1,0,1) 3->32 element gather odd 33x24", 1, 33, 24, 3, 32, 3, 3, 2, 0, 0, 1, 1}, 140);
  run_conv({"s2 p1 3->16 element gather odd 17x9", 2, 17, 9, 3, 16, 3, 3, 2}, 141);
  run_conv({"3x3 1x1 spatial 1280 (all taps but centre padded)", 2, 1, 1, 1280, 1280}, 142);
  run_conv({"1x1 stride 2 320->640", 2, 17, 16, 320, 640, 1, 1, 2, 0, 0, 0, 0}, 143);
  run_conv({"3x3 C=8 (16-byte path, one chunk per tap)", 2, 13, 11, 8, 24}, 144);
  run_conv({"3x3 s1 2560->1280 16x16 (split-K) +residual", 2, 16, 16, 2560, 1280, 3, 3, 1, 1, 1, 1, 1, true, true},
           145);
}

// Small shapes of the conv paths (16-byte gather, element gather, stride 2, pointwise) on EVERY tile with
// and without split-K, for compute-sanitizer (gpu-check runs "cuda_op_small_" under memcheck/racecheck).
TEST(cuda_op_small_conv) {
  run_conv({"small 3x3 16->32 odd 9x7 +residual", 1, 9, 7, 16, 32, 3, 3, 1, 1, 1, 1, 1, true, true}, 150,
           every_plan({1, 2}));
  run_conv({"small s2 pad(0,1,0,1) 3->8", 1, 9, 7, 3, 8, 3, 3, 2, 0, 0, 1, 1}, 151, every_plan({1}));
  run_conv({"small 1x1 20->12", 1, 5, 5, 20, 12, 1, 1, 1, 0, 0, 0, 0}, 152, every_plan({1}));
  run_conv({"small 3x3 64->40 odd 11x5 split-K", 1, 11, 5, 64, 40}, 153, every_plan({3}));
}

// Every tile, unsplit and split, on the real SD-1.5 convs (batch 2, 64x64 latent) against one CPU reference
// each: the 16-byte gather at every level, the up path's concat widths, stride 2, the element gather
// (conv_in, 4 channels) and a 1x1 shortcut (the pointwise GEMM path).
TEST(cuda_op_tiles_conv_sd_shapes) {
  const GemmPlans plans = every_plan({1, 3});
  run_conv({"tiles 3x3 320 64x64", 2, 64, 64, 320, 320}, 160, plans);
  run_conv({"tiles 3x3 640 32x32 +residual", 2, 32, 32, 640, 640, 3, 3, 1, 1, 1, 1, 1, true, true}, 161, plans);
  run_conv({"tiles 3x3 1280 16x16", 2, 16, 16, 1280, 1280}, 162, plans);
  run_conv({"tiles 3x3 1280 8x8 +residual", 2, 8, 8, 1280, 1280, 3, 3, 1, 1, 1, 1, 1, true, true}, 163, plans);
  run_conv({"tiles up 2560->1280 16x16", 2, 16, 16, 2560, 1280}, 164, plans);
  run_conv({"tiles up 960->320 64x64", 2, 64, 64, 960, 320}, 165, plans);
  run_conv({"tiles down s2 640 32x32", 2, 32, 32, 640, 640, 3, 3, 2}, 166, plans);
  run_conv({"tiles conv_in 4->320 (element gather)", 2, 64, 64, 4, 320}, 167, plans);
  run_conv({"tiles 1x1 shortcut 640->320 +residual", 2, 64, 64, 640, 320, 1, 1, 1, 0, 0, 0, 0, true, true}, 168, plans);
}
