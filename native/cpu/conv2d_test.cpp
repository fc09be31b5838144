// conv2d (NHWC implicit GEMM) against a float64 reference: SD-1.5 / VAE shapes (3x3 at 320/640/1280
// channels, stride-2 downsamplers, the VAE's (0,1,0,1) padding, conv_in 4 -> 320, conv_out 320 -> 4,
// 1x1 shortcuts with residual), odd sizes (9x7, 13x11) and tiny edge cases. Large cases check a
// sample of output pixels. Tolerance: max|err| <= 3e-6 * max|ref| (f32 accumulation over C*R*S <= 11520).
#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

struct ConvCase {
  int N, H, W, C, K, R, S, stride;
  int pt, pl, pb, pr;
  bool bias = true, residual = false;
  int pixel_step = 1;  // reference for every pixel_step-th output pixel (plus the last)
  double tol = 3e-6;
};

void run_conv(Backend& be, const ConvCase& c, uint64_t seed) {
  Rng rng(seed);
  const int P = (c.H + c.pt + c.pb - c.R) / c.stride + 1, Q = (c.W + c.pl + c.pr - c.S) / c.stride + 1;
  auto x = rng.vec((size_t)c.N * c.H * c.W * c.C);
  auto w = rng.vec((size_t)c.K * c.C * c.R * c.S);
  auto b = rng.vec(c.K);
  auto r = rng.vec((size_t)c.N * P * Q * c.K);
  auto W = be.upload("conv.weight", WeightKind::Conv, {c.K, c.C, c.R, c.S}, w.data());
  auto B = be.upload("conv.bias", WeightKind::Vector, {c.K}, b.data());
  Buf bx(be, x), by(be, (size_t)c.N * P * Q * c.K), br(be, r);
  Conv2dArgs a;
  a.x = bx.p(), a.N = c.N, a.H = c.H, a.W = c.W, a.C = c.C;
  a.w = W.get(), a.b = c.bias ? B.get() : nullptr, a.K = c.K, a.R = c.R, a.S = c.S, a.stride = c.stride;
  a.pad_top = c.pt, a.pad_left = c.pl, a.pad_bottom = c.pb, a.pad_right = c.pr;
  a.residual = c.residual ? br.p() : nullptr, a.y = by.p(), a.P = P, a.Q = Q;
  be.conv2d(a);
  auto y = by.get();
  std::vector<float> got;
  std::vector<double> ref;
  const int64_t pixels = (int64_t)c.N * P * Q;
  for (int64_t m = 0; m < pixels; m += c.pixel_step) {
    const int64_t mm = (m + c.pixel_step >= pixels) ? pixels - 1 : m;
    const int64_t n = mm / (P * Q), p = mm / Q % P, q = mm % Q;
    for (int k = 0; k < c.K; ++k) {
      double v = (c.bias ? b[k] : 0.0) + (c.residual ? r[mm * c.K + k] : 0.0);
      for (int ci = 0; ci < c.C; ++ci)
        for (int rr = 0; rr < c.R; ++rr)
          for (int ss = 0; ss < c.S; ++ss) {
            const int64_t ih = p * c.stride - c.pt + rr, iw = q * c.stride - c.pl + ss;
            if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
            v += (double)x[((n * c.H + ih) * c.W + iw) * c.C + ci] * w[(((size_t)k * c.C + ci) * c.R + rr) * c.S + ss];
          }
      ref.push_back(v);
      got.push_back(y[mm * c.K + k]);
    }
    if (mm == pixels - 1) break;
  }
  char name[160];
  std::snprintf(name, sizeof name, "conv %dx%d s%d pad(%d,%d,%d,%d) %dx%dx%dx%d -> %d%s", c.R, c.S, c.stride, c.pt,
                c.pl, c.pb, c.pr, c.N, c.H, c.W, c.C, c.K, c.residual ? " +res" : "");
  expect_close(name, got, ref, c.tol);
}

}  // namespace

TEST(cpu_conv2d_unet_shapes) {
  auto be = make_cpu_backend();
  run_conv(*be, {1, 64, 64, 320, 320, 3, 3, 1, 1, 1, 1, 1, true, false, 67}, 1);        // level-0 resnet conv
  run_conv(*be, {2, 16, 16, 1280, 1280, 3, 3, 1, 1, 1, 1, 1, true, true, 61}, 2);       // level-2 conv2 + skip
  run_conv(*be, {1, 32, 32, 640, 640, 3, 3, 2, 1, 1, 1, 1, true, false, 23}, 3);        // downsampler 32 -> 16
  run_conv(*be, {2, 64, 64, 4, 320, 3, 3, 1, 1, 1, 1, 1, true, false, 29}, 4);          // conv_in
  run_conv(*be, {1, 64, 64, 320, 4, 3, 3, 1, 1, 1, 1, 1, true, false, 13}, 5);          // conv_out
  run_conv(*be, {2, 32, 32, 960, 640, 1, 1, 1, 0, 0, 0, 0, true, true, 37}, 6);         // 1x1 shortcut + residual
  run_conv(*be, {1, 8, 8, 2560, 1280, 3, 3, 1, 1, 1, 1, 1, true, false, 17, 4e-6}, 7);  // up-block concat input
}

TEST(cpu_conv2d_vae_and_controlnet_shapes) {
  auto be = make_cpu_backend();
  run_conv(*be, {1, 64, 64, 128, 128, 3, 3, 2, 0, 0, 1, 1, true, false, 41}, 10);  // VAE downsample (0,1,0,1)
  run_conv(*be, {1, 13, 11, 8, 8, 3, 3, 2, 0, 0, 1, 1, true, false, 1}, 11);       // same on odd sizes
  run_conv(*be, {1, 64, 64, 3, 16, 3, 3, 1, 1, 1, 1, 1, true, false, 7}, 12);      // cond. embedding conv_in
  run_conv(*be, {1, 64, 64, 16, 32, 3, 3, 2, 1, 1, 1, 1, true, false, 3}, 13);     // cond. embedding stride 2
  run_conv(*be, {1, 16, 16, 512, 512, 3, 3, 1, 1, 1, 1, 1, true, true, 11}, 14);   // VAE mid resnet
}

TEST(cpu_conv2d_odd_and_edge_sizes) {
  auto be = make_cpu_backend(3);
  uint64_t seed = 20;
  const ConvCase cases[] = {
      {1, 9, 7, 5, 7, 3, 3, 1, 1, 1, 1, 1},         {2, 9, 7, 16, 24, 3, 3, 2, 1, 1, 1, 1},
      {1, 13, 11, 33, 17, 3, 3, 2, 1, 1, 1, 1},     {1, 13, 11, 4, 3, 3, 3, 2, 0, 1, 0, 1},
      {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},         {1, 1, 1, 3, 2, 3, 3, 1, 1, 1, 1, 1},
      {1, 2, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1},         {3, 5, 4, 2, 35, 1, 1, 1, 0, 0, 0, 0, false, true},
      {1, 6, 5, 7, 9, 1, 1, 2, 0, 0, 0, 0},         {1, 5, 6, 7, 9, 1, 1, 1, 1, 0, 2, 1},
      {1, 7, 8, 6, 10, 3, 2, 1, 2, 0, 1, 3, false}, {1, 3, 3, 300, 20, 3, 3, 1, 1, 1, 1, 1, true, true},
  };
  for (const ConvCase& c : cases) run_conv(*be, c, seed++);
}

TEST(cpu_conv2d_argument_errors) {
  auto be = make_cpu_backend(1);
  std::vector<float> w(4 * 3 * 3 * 3, 0.5f);
  auto W = be->upload("down.conv.weight", WeightKind::Conv, {4, 3, 3, 3}, w.data());
  Buf x(*be, 2 * 5 * 5 * 3), y(*be, 2 * 5 * 5 * 4);
  Conv2dArgs a;
  a.x = x.p(), a.N = 2, a.H = 5, a.W = 5, a.C = 3, a.w = W.get(), a.K = 4, a.y = y.p(), a.P = 5, a.Q = 5;
  be->conv2d(a);
  a.stride = 2;
  CHECK_THROWS_WITH(be->conv2d(a), "expected 3x3");
  a.stride = 1, a.C = 4;
  CHECK_THROWS_WITH(be->conv2d(a), "'down.conv.weight' has shape [4, 3, 3, 3], expected [4, 4, 3, 3]");
  a.C = 3, a.b = W.get();
  CHECK_THROWS_WITH(be->conv2d(a), "is Conv, expected Vector");
}
