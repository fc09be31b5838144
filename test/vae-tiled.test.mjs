// Tiled VAE (Vae.encodeTiled / decodeTiled, native/engine/models/vae_tiled.h) through the public API on
// the fixture VAE: (1) tiled == untiled within float rounding, (2) a smooth latent gradient decodes with
// no step at the tile borders, while decoding the same tiles independently (per-tile GroupNorm and
// attention, as any per-tile scheme) does show steps — so the measure can see a seam.
import test from 'ava';
import path from 'node:path';
import { Engine } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';

// Tolerance of tiled vs untiled (image units, [-1, 1] range): measured max 6e-6 (native test), bound
// 1e-4 * max(1, max|ref|). The step threshold is the same 1e-4 (1/80 of one uint8 level, 2/255).
const REL_TOL = 1e-4;
const STEP_TOL = 1e-4;

const engine = await Engine.create({ device: 'cpu' });
const vae = await engine.loadVae(path.join(model, 'vae'));
test.after.always(() => engine.dispose());

function maxAbsDiff(a, b) {
  let m = 0;
  let r = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]));
    r = Math.max(r, Math.abs(b[i]));
  }
  return { maxAbs: m, maxRef: r };
}

function noise(n, seed, scale = 1) {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

test.serial('decodeTiled equals decode on the fixture VAE (latent 32x24, tile 8, pad 4: 3x2 tiles)', async (t) => {
  const z = { shape: [1, 4, 32, 24], data: noise(4 * 32 * 24, 7, 1.5) };
  const ref = await vae.decode(z);
  const got = await vae.decodeTiled(z, { tile: 8, pad: 4 });
  t.deepEqual(got.image.shape, [1, 3, 256, 192]);
  const d = maxAbsDiff(got.image.data, ref.image.data);
  t.log(`decode max_abs ${d.maxAbs.toExponential(2)} (max|ref| ${d.maxRef.toFixed(2)}), tile arena ${got.stats.arenaBytes} B`);
  t.true(d.maxAbs <= REL_TOL * Math.max(1, d.maxRef), `max_abs ${d.maxAbs}`);
});

test.serial('encodeTiled equals encode on the fixture VAE (256x192, tile 64, pad 16: 4x3 tiles)', async (t) => {
  const x = { shape: [1, 3, 256, 192], data: noise(3 * 256 * 192, 11) };
  const ref = await vae.encode(x);
  const got = await vae.encodeTiled(x, { tile: 64, pad: 16 });
  t.deepEqual(got.moments.shape, [1, 8, 32, 24]);
  const d = maxAbsDiff(got.moments.data, ref.moments.data);
  t.log(`encode max_abs ${d.maxAbs.toExponential(2)} (max|ref| ${d.maxRef.toFixed(2)})`);
  t.true(d.maxAbs <= REL_TOL * Math.max(1, d.maxRef), `max_abs ${d.maxAbs}`);
});

test.serial('a smooth latent gradient decodes tiled with no step at the tile borders', async (t) => {
  // latent 40x40: a linear ramp across x plus a slow sinusoid along y, different per channel
  const h = 40;
  const w = 40;
  const z = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        z[(c * h + y) * w + x] = (c % 2 ? -1 : 1) * ((2 * x) / (w - 1) - 1) * (1 + 0.3 * c) + 0.5 * Math.sin((Math.PI * y) / h + c);
  const zt = { shape: [1, 4, h, w], data: z };
  const tile = 8;
  const pad = 4;
  const ref = (await vae.decode(zt)).image.data;
  const got = (await vae.decodeTiled(zt, { tile, pad })).image.data;
  const H = 8 * h;
  const W = 8 * w;
  // The official split of a 40-latent-px side with tile 8, pad 4 (docs/architecture.md §7.9): n = ceil((40 - 8) / 8)
  // = 4 tiles of 8, cores [4+8k, 12+8k), the outer edges extended to the border: latent borders 12, 20, 28
  // (the engine's vae_tile_bounds(40, 8, 4) = {0, 12, 20, 28, 40}, native/engine/models/vae_tiled_test.cpp).
  const bounds = [0, 12, 20, 28, 40];
  const spans = bounds.slice(1).map((b1, k) => [bounds[k], b1]);
  const tiles = spans.flatMap(([y0, y1]) => spans.map(([x0, x1]) => ({ y0, y1, x0, x1 })));
  // tile borders in output pixels
  const bx = bounds.slice(1, -1).map((b) => 8 * b);
  const by = bx;
  const at = (img, c, y, x) => img[(c * H + y) * W + x];
  // step excess: the jump across a border minus the untiled image's jump at the same place
  const stepExcess = (img) => {
    let m = 0;
    for (let c = 0; c < 3; c++) {
      for (const X of bx)
        for (let y = 0; y < H; y++) m = Math.max(m, Math.abs(at(img, c, y, X) - at(img, c, y, X - 1) - (at(ref, c, y, X) - at(ref, c, y, X - 1))));
      for (const Y of by)
        for (let x = 0; x < W; x++) m = Math.max(m, Math.abs(at(img, c, Y, x) - at(img, c, Y - 1, x) - (at(ref, c, Y, x) - at(ref, c, Y - 1, x))));
    }
    return m;
  };
  const tiledStep = stepExcess(got);
  const whole = maxAbsDiff(got, ref);

  // Contrast: the same split decoded tile by tile independently (each tile's padded input box decoded
  // alone, its valid region cropped: per-tile GroupNorm statistics and attention).
  const naive = new Float32Array(3 * H * W);
  for (const b of tiles) {
    // the tile's box grown by the pad (clamped), decoded alone; its own box is copied out
    const input = { y0: Math.max(0, b.y0 - pad), y1: Math.min(h, b.y1 + pad), x0: Math.max(0, b.x0 - pad), x1: Math.min(w, b.x1 + pad) };
    const ih = input.y1 - input.y0;
    const iw = input.x1 - input.x0;
    const zi = new Float32Array(4 * ih * iw);
    for (let c = 0; c < 4; c++)
      for (let y = 0; y < ih; y++) for (let x = 0; x < iw; x++) zi[(c * ih + y) * iw + x] = z[(c * h + input.y0 + y) * w + input.x0 + x];
    const img = (await vae.decode({ shape: [1, 4, ih, iw], data: zi })).image.data;
    const [cy, cx] = [8 * (b.y0 - input.y0), 8 * (b.x0 - input.x0)];
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 8 * (b.y1 - b.y0); y++)
        for (let x = 0; x < 8 * (b.x1 - b.x0); x++) naive[(c * H + 8 * b.y0 + y) * W + 8 * b.x0 + x] = img[(c * 8 * ih + cy + y) * 8 * iw + cx + x];
  }
  const naiveStep = stepExcess(naive);
  t.log(
    `borders x ${bx.join(',')} y ${by.join(',')} px; step excess: tiled ${tiledStep.toExponential(2)}, ` +
      `independent tiles ${naiveStep.toExponential(2)}; tiled vs untiled max_abs ${whole.maxAbs.toExponential(2)}`,
  );
  t.true(tiledStep <= STEP_TOL, `tiled step excess ${tiledStep}`);
  t.true(whole.maxAbs <= REL_TOL * Math.max(1, whole.maxRef));
  t.true(naiveStep > 10 * STEP_TOL, `the measure should see the seams of independent tiles (${naiveStep})`);
});

test.serial('tile options are validated and an aborted tiled run rejects with ERR_CANCELLED', async (t) => {
  const z = { shape: [1, 4, 16, 16], data: new Float32Array(4 * 256) };
  t.is((await t.throwsAsync(vae.decodeTiled(z, { tile: 0 }))).code, 'ERR_INVALID_ARGUMENT');
  t.is((await t.throwsAsync(vae.decodeTiled(z, { pad: 1.5 }))).code, 'ERR_INVALID_ARGUMENT');
  t.is((await t.throwsAsync(vae.encodeTiled({ shape: [1, 4, 16, 16], data: new Float32Array(1024) }))).code, 'ERR_SHAPE_MISMATCH');
  const pre = new AbortController();
  pre.abort();
  t.is((await t.throwsAsync(vae.decodeTiled(z, { tile: 4, signal: pre.signal }))).code, 'ERR_CANCELLED');
  const ctl = new AbortController();
  const p = vae.decodeTiled({ shape: [1, 4, 96, 96], data: new Float32Array(4 * 96 * 96) }, { tile: 32, pad: 4, signal: ctl.signal });
  setTimeout(() => ctl.abort(), 30);
  t.is((await t.throwsAsync(p)).code, 'ERR_CANCELLED');
  const ok = await vae.decodeTiled({ shape: [1, 4, 8, 8], data: new Float32Array(256) });
  t.deepEqual(ok.image.shape, [1, 3, 64, 64]);
});
