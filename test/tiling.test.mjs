import test from 'ava';
import fs from 'node:fs';
import {
  latentTiles,
  latentTilingNeeded,
  gaussianWeights,
  TileBlender,
  vaeTilingNeeded,
  VAE_ENCODER_TILING,
  VAE_DECODER_TILING,
  chooseTiling,
} from '../dist/lib/tiling.js';

/** Blends tiles given with their offsets, in array order. */
function blendTiles(tiles, shape) {
  const b = new TileBlender(shape);
  for (const t of tiles) b.add(t.data, t.x, t.y);
  return b.result();
}

const golden = JSON.parse(fs.readFileSync(new URL('./fixtures/tiling/gaussian_weights.json', import.meta.url), 'utf8'));

// ---- latent tiles (§7.8) -------------------------------------------------------------------------

test('latent tiling is decided by area: h·w > 320²', (t) => {
  t.false(latentTilingNeeded(320, 320));
  t.true(latentTilingNeeded(320, 321));
  t.false(latentTilingNeeded(64, 1600)); // 102,400: not tiled although one side is 1600
  t.true(latentTilingNeeded(64, 1601));
  t.true(latentTilingNeeded(9, 9, 6));
});

test('latent tile offsets worked by hand from the spec', (t) => {
  const cases = [
    // [h, w, opts, ts, xs, ys]
    [400, 400, {}, 320, [0, 80], [0, 80]], // (n−1)·312 + 320 ≥ 400 → n = 2, last = 400 − 320
    [330, 1000, {}, 320, [0, 312, 624, 680], [0, 10]], // n_x = 4 (3·312+320 = 1256 ≥ 1000 > 944)
    [320, 321, {}, 320, [0, 1], [0]],
    [944, 944, {}, 320, [0, 312, 624], [0, 312, 624]], // exact fit: last offset = 944 − 320 = 624
    [200, 1500, {}, 200, [0, 192, 384, 576, 768, 960, 1152, 1300], [0]], // ts = min side 200, step 192
    [9, 9, { tileSize: 6, overlap: 2 }, 6, [0, 3], [0, 3]], // tiny test configuration of §10
    [12, 16, { tileSize: 6, overlap: 2 }, 6, [0, 4, 8, 10], [0, 4, 6]],
    [64, 64, {}, 64, [0], [0]], // one tile = whole latent
  ];
  for (const [h, w, opts, ts, xs, ys] of cases) {
    const g = latentTiles(h, w, opts);
    t.is(g.tileSize, ts, `${h}x${w}`);
    t.deepEqual(g.xs, xs, `${h}x${w} xs`);
    t.deepEqual(g.ys, ys, `${h}x${w} ys`);
    t.is(g.nx, xs.length);
    t.is(g.ny, ys.length);
    t.is(g.tiles.length, xs.length * ys.length);
    // official order: x index outer, y index inner
    t.deepEqual(g.tiles[0], { x: xs[0], y: ys[0], ix: 0, iy: 0 });
    if (ys.length > 1) t.deepEqual(g.tiles[1], { x: xs[0], y: ys[1], ix: 0, iy: 1 });
    // every pixel covered, every tile inside
    for (const tile of g.tiles) t.true(tile.x >= 0 && tile.y >= 0 && tile.x + ts <= w && tile.y + ts <= h);
    t.is(g.xs.at(-1) + ts, w);
    t.is(g.ys.at(-1) + ts, h);
  }
});

test('latent tiles: overlap ≥ tile size would never terminate officially → clear error', (t) => {
  const e = t.throws(() => latentTiles(8, 100, { overlap: 8 }));
  t.is(e.code, 'ERR_INVALID_OPTION');
  t.regex(e.message, /'overlap'/);
  t.is(latentTiles(8, 8, { overlap: 8 }).tiles.length, 1); // a single tile is fine
});

test('Gaussian weights equal the official numpy computation', (t) => {
  for (const [size, g] of Object.entries(golden.sizes)) {
    const ts = Number(size);
    const w = gaussianWeights(ts, ts);
    t.is(w.length, ts * ts);
    let maxRel = 0;
    for (let y = 0; y < ts; y++)
      for (let x = 0; x < ts; x++) {
        const ref = g.y_probs[y] * g.x_probs[x]; // np.outer of the golden float64 vectors
        maxRel = Math.max(maxRel, Math.abs(w[y * ts + x] - ref) / ref);
      }
    t.true(maxRel <= 1e-15, `ts=${ts} max relative difference ${maxRel}`); // exp() may differ by an ulp between libms
    t.deepEqual(
      [w[0], w[ts - 1], w[(ts - 1) * ts], w[ts * ts - 1]].map((v, i) => Math.abs(v - g.weights_corner[i]) / g.weights_corner[i] < 1e-15),
      [true, true, true, true],
    );
  }
});

test('Gaussian weights at known points, with the different x / y centres', (t) => {
  const ts = 320;
  const w = gaussianWeights(ts, ts);
  const norm = Math.sqrt(2 * Math.PI * 0.01);
  const peak = 1 / norm; // 3.989422804014327
  t.true(Math.abs(peak - 3.989422804014327) < 1e-15);
  const wy = (y) => (w[y * ts + 159] / w[160 * ts + 159]) * peak; // recover wy from one column
  // y centre is ts/2 = 160: wy(160) is the exact peak and wy is NOT symmetric about 159.5
  const wx159 = Math.exp(-(0.5 * 0.5) / (ts * ts) / 0.02) / norm;
  t.true(Math.abs(w[160 * ts + 159] - peak * wx159) < 1e-12);
  t.is(w[160 * ts + 159], w[160 * ts + 160]); // x centre 159.5: wx(159) == wx(160)
  t.not(w[0 * ts + 159], w[319 * ts + 159]); // y: wy(0) ≠ wy(319)
  t.true(Math.abs(wy(0) - Math.exp(-12.5) / norm) < 1e-15); // (0 − 160)² / 320² / 0.02 = 12.5
  t.true(Math.abs(w[0] - (Math.exp(-12.5) / norm) * (Math.exp(-(159.5 * 159.5) / (ts * ts) / 0.02) / norm)) < 1e-18);
  // x symmetric
  for (let x = 0; x < ts; x++) t.is(w[100 * ts + x], w[100 * ts + (ts - 1 - x)]);
});

function fieldTiles(g, B, C, f) {
  const ts = g.tileSize;
  return g.tiles.map(({ x, y }) => {
    const d = new Float32Array(B * C * ts * ts);
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let ty = 0; ty < ts; ty++) for (let tx = 0; tx < ts; tx++) d[((b * C + c) * ts + ty) * ts + tx] = f(b, c, y + ty, x + tx);
    return { data: d, x, y };
  });
}

test('blending a constant field through overlapping tiles gives the constant back (no seams)', (t) => {
  for (const [h, w, opts] of [
    [20, 37, { tileSize: 8, overlap: 2 }],
    [9, 9, { tileSize: 6, overlap: 2 }],
    [40, 40, { tileSize: 16, overlap: 8 }],
  ]) {
    const g = latentTiles(h, w, opts);
    const B = 2;
    const C = 4;
    const v = 0.7;
    const out = blendTiles(
      fieldTiles(g, B, C, () => v),
      { batch: B, channels: C, height: h, width: w, tileHeight: g.tileSize, tileWidth: g.tileSize },
    );
    t.is(out.length, B * C * h * w);
    let max = 0;
    for (const x of out) max = Math.max(max, Math.abs(x - v));
    t.true(max < 1e-6, `${h}x${w}: max error ${max}`);
  }
});

test('a smooth gradient through tiles is reproduced with max error < 1e-5', (t) => {
  const f = (b, c, y, x) => 0.013 * x - 0.021 * y + 0.25 * c - 0.5 * b + 0.1 * Math.sin(x / 7) * Math.cos(y / 5);
  for (const [h, w, opts, B, C] of [
    [30, 45, { tileSize: 12, overlap: 4 }, 2, 4],
    [330, 400, {}, 1, 1], // official 320/8 geometry: 2 x 2 tiles
  ]) {
    const g = latentTiles(h, w, opts);
    const out = blendTiles(fieldTiles(g, B, C, f), { batch: B, channels: C, height: h, width: w, tileHeight: g.tileSize, tileWidth: g.tileSize });
    let max = 0;
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let y = 0; y < h; y++)
          for (let x = 0; x < w; x++) max = Math.max(max, Math.abs(out[((b * C + c) * h + y) * w + x] - Math.fround(f(b, c, y, x))));
    t.true(max < 1e-5, `${h}x${w}: max error ${max}`);
  }
});

test('blend follows the official float32 accumulation exactly (two overlapping tiles)', (t) => {
  // 1 x 1 x 4 x 6 map, tiles 4 x 4 at x = 0 and x = 2 (overlap 2)
  const wts = gaussianWeights(4, 4);
  const a = new Float32Array(16).map((_, i) => 0.1 * i + 0.3);
  const b = new Float32Array(16).map((_, i) => -0.07 * i + 1.1);
  const bl = new TileBlender({ batch: 1, channels: 1, height: 4, width: 6, tileHeight: 4, tileWidth: 4 });
  bl.add(a, 0, 0);
  bl.add(b, 2, 0);
  t.is(bl.tiles, 2);
  const out = bl.result();
  for (let y = 0; y < 4; y++)
    for (let x = 0; x < 6; x++) {
      let acc = 0;
      let cont = 0;
      if (x < 4) {
        acc = Math.fround(acc + a[y * 4 + x] * wts[y * 4 + x]);
        cont = Math.fround(cont + wts[y * 4 + x]);
      }
      if (x >= 2) {
        acc = Math.fround(acc + b[y * 4 + x - 2] * wts[y * 4 + x - 2]);
        cont = Math.fround(cont + wts[y * 4 + x - 2]);
      }
      t.is(out[y * 6 + x], Math.fround(acc / cont));
    }
});

test('TileBlender rejects bad tiles', (t) => {
  const bl = new TileBlender({ batch: 1, channels: 2, height: 8, width: 8, tileHeight: 4, tileWidth: 4 });
  t.is(t.throws(() => bl.add(new Float32Array(16), 0, 0)).code, 'ERR_INVALID_ARGUMENT');
  t.is(t.throws(() => bl.add(new Float32Array(32), 5, 0)).code, 'ERR_INVALID_ARGUMENT');
  t.is(t.throws(() => new TileBlender({ batch: 1, channels: 1, height: 4, width: 4, tileHeight: 5, tileWidth: 4 })).code, 'ERR_INVALID_ARGUMENT');
});

// ---- tiled VAE (§7.9) ---------------------------------------------------------------------------

test('VAE thresholds: encoder > 1088 px, decoder > 246 latent px', (t) => {
  t.false(vaeTilingNeeded(1088, 1088, VAE_ENCODER_TILING));
  t.true(vaeTilingNeeded(100, 1089, VAE_ENCODER_TILING));
  t.false(vaeTilingNeeded(246, 246, VAE_DECODER_TILING));
  t.true(vaeTilingNeeded(247, 10, VAE_DECODER_TILING));
  t.false(vaeTilingNeeded(64, 64, VAE_DECODER_TILING));
});

// The split of the tiled VAE is computed by the engine only (native/engine/models/vae_tiled_test.cpp
// checks its boundaries; test/vae-tiled.test.mjs its result against the untiled VAE).

// ---- memory budget -------------------------------------------------------------------------------

test('chooseTiling: fits → no tiling; area rule → official tiling', (t) => {
  const huge = { memoryBudgetBytes: 1e15, bytesPerLatentPixel: 1e5 };
  let c = chooseTiling(64, 64, huge);
  t.false(c.tiled);
  t.is(c.reason, 'fits');
  t.is(c.estimatedBytes, 64 * 64 * 1e5);
  c = chooseTiling(400, 400, huge);
  t.true(c.tiled);
  t.is(c.reason, 'official');
  t.is(c.tileSize, 320);
  t.deepEqual(c.tiling.xs, [0, 80]);
});

test('chooseTiling: over budget → largest multiple-of-8 tile that fits', (t) => {
  let c = chooseTiling(64, 64, { memoryBudgetBytes: 1000 * 40 * 40, bytesPerLatentPixel: 1000 });
  t.true(c.tiled);
  t.is(c.reason, 'budget');
  t.is(c.tileSize, 40);
  t.deepEqual(c.tiling.xs, [0, 24]);
  t.true(c.estimatedBytes <= 1000 * 40 * 40);
  // the official tile does not fit either
  c = chooseTiling(400, 400, { memoryBudgetBytes: 200 * 200 * 10, bytesPerLatentPixel: 10 });
  t.is(c.reason, 'budget');
  t.is(c.tileSize, 200);
  // quadratic attention term and fixed bytes
  c = chooseTiling(128, 128, { memoryBudgetBytes: 1e6 + 64 * 64 + 64 ** 4, bytesPerLatentPixel: 1, bytesPerLatentPixelSquared: 1, fixedBytes: 1e6 });
  t.is(c.tileSize, 64);
});

test('chooseTiling: nothing fits → ERR_OUT_OF_MEMORY; bad options → ERR_INVALID_OPTION', (t) => {
  const e = t.throws(() => chooseTiling(64, 64, { memoryBudgetBytes: 100, bytesPerLatentPixel: 1000 }));
  t.is(e.code, 'ERR_OUT_OF_MEMORY');
  t.regex(e.message, /budget/);
  t.is(t.throws(() => chooseTiling(64, 64, { memoryBudgetBytes: 0, bytesPerLatentPixel: 1 })).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => chooseTiling(64, 64, { memoryBudgetBytes: 10, bytesPerLatentPixel: -1 })).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => chooseTiling(0, 64, { memoryBudgetBytes: 10, bytesPerLatentPixel: 1 })).code, 'ERR_INVALID_OPTION');
});
