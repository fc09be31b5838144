// Tiled VAE (vae_tiled.h): the split geometry, tiled == untiled on the fixture VAE and on a synthetic
// SD-width VAE, errors and cancellation, and (XPSR_TILED_VAE_REPORT=1) the memory report of docs/tiling.md.
// Tolerances: the tiled path computes the same function; differences are float rounding of the GroupNorm
// statistics (host double two-pass vs the backend's f32) and of the conv/attention accumulation order.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "../../test/test.h"
#include "../engine.h"
#include "../json.h"
#include "../weights.h"
#include "vae.h"
#include "vae_tiled.h"

using namespace xpsr;

namespace {

std::vector<float> noise(size_t n, uint64_t seed, float scale = 1.f) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    x = ((float)((s * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.f * 2.f - 1.f) * scale;
  }
  return v;
}

struct Diff {
  double max_abs = 0, max_ref = 0;
};
Diff diff(const HostTensor& a, const HostTensor& b) {
  CHECK(a.shape == b.shape);
  Diff d;
  for (size_t i = 0; i < a.data.size(); ++i) {
    d.max_abs = std::max(d.max_abs, (double)std::fabs(a.data[i] - b.data[i]));
    d.max_ref = std::max(d.max_ref, (double)std::fabs(b.data[i]));
  }
  return d;
}

struct TileOpts {
  std::optional<int> tile, pad;
};

// One VAE entry on `data` of `shape`: "encode" / "decode" or their tiled versions; returns the result.
HostTensor run(Engine& e, int model, const std::string& entry, std::vector<int64_t> shape,
               const std::vector<float>& data, TileOpts t = {}, RunStats* st = nullptr,
               const std::atomic<bool>* cancel = nullptr) {
  HostTensor in{shape, data};
  if (entry == "encode") return e.vae_encode(VaeEncodeRequest{model, in, false}, cancel, st).moments;
  if (entry == "decode") return e.vae_decode(VaeDecodeRequest{model, in, false}, cancel, st).image;
  VaeTiledRequest r{model, in, t.tile, t.pad};
  if (entry == "encode_tiled") return e.vae_encode_tiled(r, cancel, st).moments;
  return e.vae_decode_tiled(r, cancel, st).image;
}

std::string fixture_vae() { return xpsr_test::fixtures_dir() + "/model/vae"; }
bool have_fixture_vae() {
  FILE* f = std::fopen((fixture_vae() + "/config.json").c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

// SD-1.5 VAE shapes (diffusers AutoencoderKL config of runwayml/stable-diffusion-v1-5).
const char* kSdVaeConfig =
    R"({"block_out_channels":[128,256,512,512],"in_channels":3,"out_channels":3,"latent_channels":4,)"
    R"("layers_per_block":2,"norm_num_groups":32,"scaling_factor":0.18215})";

}  // namespace

TEST(vae_tiled_bounds_follow_the_official_split) {
  // lib/tiling.ts vaeTiles: extended core boxes partition the input at P + k*tile'.
  CHECK((vae_tile_bounds(256, 224, 11) == std::vector<int>{0, 139, 256}));  // 2048 px output
  CHECK((vae_tile_bounds(32, 8, 4) == std::vector<int>{0, 12, 20, 32}));
  CHECK((vae_tile_bounds(24, 8, 4) == std::vector<int>{0, 12, 24}));
  CHECK((vae_tile_bounds(256, 64, 16) == std::vector<int>{0, 80, 144, 208, 256}));
  CHECK((vae_tile_bounds(64, 224, 11) == std::vector<int>{0, 64}));  // below the threshold: one tile
  CHECK((vae_tile_bounds(5, 8, 4) == std::vector<int>{0, 5}));
  CHECK_THROWS_WITH(vae_tile_bounds(10, 0, 1), "tile 0");
}

TEST(vae_tiled_decode_matches_untiled_fixture) {
  if (!have_fixture_vae()) SKIP("no fixture VAE");
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.path = fixture_vae();
  int m = e.load(ModelKind::Vae, o).id;
  // N = 2 (samples differ), latent 32x24 -> image 256x192; tile 8 / pad 4 -> 3 x 2 tiles.
  std::vector<int64_t> shape{2, 4, 32, 24};
  auto z = noise(2 * 4 * 32 * 24, 7, 1.5f);
  HostTensor ref = run(e, m, "decode", shape, z);
  RunStats st;
  HostTensor got = run(e, m, "decode_tiled", shape, z, {8, 4}, &st);
  Diff d = diff(got, ref);
  std::printf("    decode fixture 2x4x32x24 tile 8 pad 4: max_abs %.3g (max|ref| %.3g), tile arena %zu B, %zu ops\n",
              d.max_abs, d.max_ref, st.arena_bytes, st.ops);
  CHECK(d.max_abs <= 1e-4 * std::max(1.0, d.max_ref));
  // tile larger than the latent: one tile, same result
  HostTensor one = run(e, m, "decode_tiled", shape, z, {64, 0});
  CHECK(diff(one, ref).max_abs <= 1e-4 * std::max(1.0, d.max_ref));
}

TEST(vae_tiled_encode_matches_untiled_fixture) {
  if (!have_fixture_vae()) SKIP("no fixture VAE");
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.path = fixture_vae();
  int m = e.load(ModelKind::Vae, o).id;
  // 256x192 image, tile 64 / pad 16 -> 4 x 3 tiles
  std::vector<int64_t> shape{1, 3, 256, 192};
  auto x = noise(3 * 256 * 192, 11);
  HostTensor ref = run(e, m, "encode", shape, x);
  RunStats st;
  HostTensor got = run(e, m, "encode_tiled", shape, x, {64, 16}, &st);
  Diff d = diff(got, ref);
  std::printf("    encode fixture 1x3x256x192 tile 64 pad 16: max_abs %.3g (max|ref| %.3g), tile arena %zu B\n",
              d.max_abs, d.max_ref, st.arena_bytes);
  CHECK(d.max_abs <= 1e-4 * std::max(1.0, d.max_ref));
  // odd size (not a multiple of 8): 100x84 -> 12x10 latent, tile 32 / pad 8
  std::vector<int64_t> s2{1, 3, 100, 84};
  auto x2 = noise(3 * 100 * 84, 12);
  HostTensor r2 = run(e, m, "encode", s2, x2);
  HostTensor g2 = run(e, m, "encode_tiled", s2, x2, {32, 8});
  Diff d2 = diff(g2, r2);
  std::printf("    encode fixture 1x3x100x84 tile 32 pad 8: max_abs %.3g\n", d2.max_abs);
  CHECK(d2.max_abs <= 1e-4 * std::max(1.0, d2.max_ref));
}

TEST(vae_tiled_matches_untiled_sd_width_synthetic) {
  // SD widths (128..512 channels, 32 groups, 2 layers per block) with random weights, small latent.
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.synthetic = true, o.config_json = kSdVaeConfig, o.seed = 3;
  int m = e.load(ModelKind::Vae, o).id;
  std::vector<int64_t> shape{1, 4, 16, 12};
  auto z = noise(4 * 16 * 12, 5, 2.f);
  HostTensor ref = run(e, m, "decode", shape, z);
  HostTensor got = run(e, m, "decode_tiled", shape, z, {6, 2});  // 2 x 2 tiles
  Diff d = diff(got, ref);
  std::printf("    decode SD-width synthetic 1x4x16x12 tile 6 pad 2: max_abs %.3g (max|ref| %.3g)\n", d.max_abs,
              d.max_ref);
  CHECK(d.max_abs <= 1e-4 * std::max(1.0, d.max_ref));
  std::vector<int64_t> xs{1, 3, 64, 48};
  auto x = noise(3 * 64 * 48, 6);
  HostTensor er = run(e, m, "encode", xs, x);
  HostTensor eg = run(e, m, "encode_tiled", xs, x, {16, 8});  // 3 x 2 tiles
  Diff de = diff(eg, er);
  std::printf("    encode SD-width synthetic 1x3x64x48 tile 16 pad 8: max_abs %.3g (max|ref| %.3g)\n", de.max_abs,
              de.max_ref);
  CHECK(de.max_abs <= 1e-4 * std::max(1.0, de.max_ref));
}

TEST(vae_tiled_errors_and_cancel) {
  if (!have_fixture_vae()) SKIP("no fixture VAE");
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.path = fixture_vae();
  o.vae_encoder = false;
  int m = e.load(ModelKind::Vae, o).id;
  std::vector<float> z(4 * 8 * 8, 0.1f);
  CHECK_THROWS_WITH(run(e, m, "decode_tiled", {1, 4, 8, 8}, z, {0, {}}), "tile");
  CHECK_THROWS_WITH(run(e, m, "decode_tiled", {1, 4, 8, 8}, z, {{}, -1}), "pad");
  CHECK_THROWS_WITH(run(e, m, "decode_tiled", {1, 2, 16, 8}, z), "must have 4 channels");
  CHECK_THROWS_WITH(run(e, m, "decode_tiled", {1, 4, 8, 9}, z), "values but shape");
  CHECK_THROWS_WITH(run(e, m, "encode_tiled", {1, 3, 8, 8}, std::vector<float>(3 * 64, 0.f)), "without its encoder");
  std::atomic<bool> cancel{true};
  CHECK_THROWS_WITH(run(e, m, "decode_tiled", {1, 4, 8, 8}, z, {}, nullptr, &cancel), "cancelled");
}

TEST(vae_tiled_memory_report_sd_2048) {
  // Memory of a 2048x2048 decode (latent 256x256) with the SD-1.5 VAE shapes, plans built but not run.
  // Run: XPSR_TILED_VAE_REPORT=1 build-vt/xpsr_tests vae_tiled_memory_report
  if (!std::getenv("XPSR_TILED_VAE_REPORT")) SKIP("set XPSR_TILED_VAE_REPORT=1");
  auto be = make_cpu_backend(0);
  Json cfg = Json::parse(kSdVaeConfig, "sd vae");
  Vae vae;
  {
    WeightLoader ld(*be, "VAE", 1);
    vae.load(ld, parse_vae_config(cfg, "sd vae"), true, true);
    ld.finish();
  }
  const int lat = 256;
  for (int lat_side : {128, lat}) {
    std::vector<int64_t> shape{1, 4, lat_side, lat_side};
    size_t n = 4 * (size_t)lat_side * lat_side;
    {
      auto g = std::make_unique<Graph>(*be);
      Val z = g->input("z", Dims{1, lat_side, lat_side, 4});
      g->output("image", vae.decode(*g, z));
      Plan p(std::move(g));
      std::printf("    untiled decode %dx%d px: arena %.1f MiB (naive %.1f MiB), %zu ops\n", 8 * lat_side, 8 * lat_side,
                  p.arena_bytes() / 1048576.0, p.naive_bytes() / 1048576.0, p.op_count());
    }
    for (int tile : {224, 128, 64}) {
      TiledVaeOptions o;
      o.tile = tile, o.pad = 11, o.dry_run = true;
      TiledVaeStats st;
      TiledVae(*be, vae).decode(shape, nullptr, n, o, nullptr, &st);
      std::printf(
          "    tiled decode %dx%d px tile %d pad 11: %dx%d tiles, %d segment plans, max arena %.1f MiB (%s), "
          "host maps peak %.1f MiB\n",
          8 * lat_side, 8 * lat_side, tile, st.tiles_y, st.tiles_x, st.segments, st.max_arena_bytes / 1048576.0,
          st.max_arena_segment.c_str(), st.host_peak_bytes / 1048576.0);
    }
  }
  {
    // A real run at SD widths: 512x512 px decode (latent 64x64), untiled vs tile 16 / pad 4 (4x4 tiles).
    Engine e(make_cpu_backend(0));
    LoadOptions o;
    o.synthetic = true, o.config_json = kSdVaeConfig, o.seed = 3;
    int m = e.load(ModelKind::Vae, o).id;
    std::vector<int64_t> shape{1, 4, 64, 64};
    auto z = noise(4 * 64 * 64, 9, 2.f);
    RunStats su, st;
    auto t0 = std::chrono::steady_clock::now();
    HostTensor ref = run(e, m, "decode", shape, z, {}, &su);
    auto t1 = std::chrono::steady_clock::now();
    HostTensor got = run(e, m, "decode_tiled", shape, z, {16, 4}, &st);
    auto t2 = std::chrono::steady_clock::now();
    Diff d = diff(got, ref);
    auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    std::printf(
        "    run decode 512x512 SD widths: untiled %.1f s arena %.1f MiB; tiled 4x4 %.1f s (host %.1f s) max arena "
        "%.1f MiB; max_abs %.3g (max|ref| %.3g)\n",
        s(t0, t1), su.arena_bytes / 1048576.0, s(t1, t2), st.upload_ms / 1000, st.arena_bytes / 1048576.0, d.max_abs,
        d.max_ref);
    CHECK(d.max_abs <= 1e-4 * std::max(1.0, d.max_ref));
  }
  {
    std::vector<int64_t> shape{1, 3, 2048, 2048};
    auto g = std::make_unique<Graph>(*be);
    Val x = g->input("x", Dims{1, 2048, 2048, 3});
    g->output("moments", vae.encode(*g, x));
    Plan p(std::move(g));
    std::printf("    untiled encode 2048x2048 px: arena %.1f MiB\n", p.arena_bytes() / 1048576.0);
    TiledVaeOptions o;
    o.dry_run = true;
    TiledVaeStats st;
    TiledVae(*be, vae).encode(shape, nullptr, 3 * 2048 * 2048, o, nullptr, &st);
    std::printf(
        "    tiled encode 2048x2048 px tile 1024 pad 32: %dx%d tiles, max arena %.1f MiB (%s), host peak %.1f MiB\n",
        st.tiles_y, st.tiles_x, st.max_arena_bytes / 1048576.0, st.max_arena_segment.c_str(),
        st.host_peak_bytes / 1048576.0);
  }
}
