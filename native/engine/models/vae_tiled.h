// Tiled VAE encoder/decoder: any image size with bounded backend (GPU) memory, computing the SAME function
// as the untiled VAE (docs/tiling.md; the official vaehook, xpsr-architecture.md §7.9, computes a different
// one: per-tile-averaged GroupNorm variances, per-tile attention, a double GroupNorm in the attention).
//
// How: the network is cut at every GroupNorm (and at every resolution change) into segments, each with
// one 3x3 conv (or the attention, or a 1x1 conv). Between segments the feature map lives in HOST memory as
// one whole-image channels-last map. A segment runs tile by tile: each tile's input box is its core box
// grown by the segment's receptive field (1 px for a 3x3 conv; zero-filled outside the image, which is
// exactly the conv's zero padding), run as a small Plan on the backend with VALID convolutions, and the
// core of the result is written back. Because the halo is refreshed from the neighbours at every segment,
// no approximation accumulates: the result equals the untiled one up to float rounding.
//   * GroupNorm: statistics of the WHOLE image (two-pass, double) computed on the host from the assembled
//     map, then applied (+ affine, + SiLU) while each tile's box is extracted. (A device-side statistics /
//     apply op would be faster on GPUs; the host work is O(image) per norm.)
//   * Mid-block attention: exact, over all positions: q|k|v are computed tile by tile into a host map,
//     then per tile of queries the attention runs against the whole-image K/V (held in that plan's arena).
//   * Tile partition: the official vaehook split (tile T, pad P; lib/tiling.ts vaeTiles: core boxes with
//     the border extension), scaled by 2 per resolution level; encoder boundaries are rounded to the
//     downsampling factor (8) so every level's tiles partition the map. The pad P only shapes the split;
//     the halo actually read is the receptive field of one segment.
// Backend memory: one segment plan at a time (uniform tile boxes -> one plan per segment, reused by every
// tile, destroyed before the next); host memory: up to three whole-image maps of the widest level.
// Test: vae_tiled_test.cpp.
#pragma once
#include <atomic>
#include <string>
#include <vector>

#include "../graph.h"
#include "vae.h"

namespace xpsr {

// Core boundaries along one axis of `size` for the official vaehook split: {0, P+t, P+2t, ..., size}
// where t = bestTileSize(ceil((size-2P)/n), tile) and n = max(1, ceil((size-2P)/tile)).
std::vector<int> vae_tile_bounds(int size, int tile, int pad);

struct TiledVaeOptions {
  int tile = 0;          // <= 0: official default (encoder 1024 image px, decoder 224 latent px)
  int pad = -1;          // < 0: official default (encoder 32, decoder 11)
  bool dry_run = false;  // build every segment plan (arena sizes, host map sizes) but compute nothing
};

struct TiledVaeStats {
  int tiles_y = 0, tiles_x = 0;  // grid at the input resolution
  int segments = 0;              // segment plans built (one per segment)
  size_t ops = 0;                // backend ops executed (all tiles)
  size_t max_arena_bytes = 0;    // largest segment plan arena = peak backend activation memory
  size_t max_naive_bytes = 0;
  std::string max_arena_segment;  // which segment needed it
  size_t host_peak_bytes = 0;     // whole-image host maps alive at once
  double plan_ms = 0, compute_ms = 0, host_ms = 0;
};

class TiledVae {
 public:
  TiledVae(Backend& be, const Vae& vae) : be_(be), vae_(vae) {}
  // x [N, in, H, W] NCHW f32 in [-1,1] (n values) -> moments [N, 2*latent, H/8, W/8] (as Vae::encode).
  HostTensor encode(const std::vector<int64_t>& shape, const float* x, size_t n, const TiledVaeOptions& o,
                    const std::atomic<bool>* cancel = nullptr, TiledVaeStats* stats = nullptr);
  // z [N, latent, h, w] NCHW f32 (latents / scaling factor) -> image [N, out, 8h, 8w] (as Vae::decode).
  HostTensor decode(const std::vector<int64_t>& shape, const float* z, size_t n, const TiledVaeOptions& o,
                    const std::atomic<bool>* cancel = nullptr, TiledVaeStats* stats = nullptr);

 private:
  Backend& be_;
  const Vae& vae_;
};

}  // namespace xpsr
