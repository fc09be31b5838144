// The public XPSR API on the bundled tiny model: results, determinism, alpha, options validation,
// cancellation, bad images and disposal. Every failure is an error value; the instance keeps serving.
import test from 'ava';
import path from 'node:path';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import sharp from 'sharp';
import { XPSR } from '../dist/lib/index.js';
import { fixtures, model } from './helpers/fixtures.mjs';

const img = (name) => path.join(fixtures, 'images', name);
const quick = { steps: 2, processSize: 64, seed: 7, prompts: { high: 'a cup of coffee', low: 'blurry' } };
const xpsr = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
test.after.always(() => xpsr.dispose());

test('upscale returns an x4 image with the prompts, seed and timings used', async (t) => {
  const r = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(r.width, 128);
  t.is(r.height, 96);
  t.is(r.channels, 3);
  t.is(r.image.length, 128 * 96 * 3);
  t.deepEqual(r.prompts, quick.prompts);
  t.is(r.seed, 7);
  t.deepEqual(r.processed, { width: 128, height: 96 });
  for (const k of ['text', 'encode', 'denoise', 'decode', 'colorfix', 'total']) t.true(r.timingsMs[k] >= 0, k);
  const png = await r.toBuffer('png');
  const meta = await sharp(png).metadata();
  t.is(meta.width, 128);
  t.is(meta.format, 'png');
  t.is((await r.sharp().metadata()).height, 96);
});

test('the same seed gives the same pixels, another seed different ones', async (t) => {
  const a = await xpsr.upscale(img('coffee_32x24.png'), quick);
  const b = await xpsr.upscale(img('coffee_32x24.png'), quick);
  const c = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, seed: 8 });
  t.true(a.image.equals(b.image));
  t.false(a.image.equals(c.image));
});

test('Buffer and sharp inputs, and alpha is upscaled and recombined', async (t) => {
  const rgba = await sharp(img('coffee_32x24.png')).ensureAlpha(0.5).png().toBuffer();
  const r = await xpsr.upscale(rgba, quick);
  t.is(r.channels, 4);
  t.is(r.image.length, 128 * 96 * 4);
  const a0 = (await sharp(rgba).raw().toBuffer())[3];
  t.true(a0 > 100 && a0 < 150);
  for (let i = 3; i < r.image.length; i += 4 * 97) t.is(r.image[i], a0); // a constant alpha stays constant
  const s = await xpsr.upscale(sharp(img('coffee_32x24.png')), quick);
  t.is(s.width, 128);
});

test('guidance <= 1 runs a single row without CFG', async (t) => {
  const r = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, guidanceScale: 1 });
  t.is(r.width, 128);
});

test('progress reports every stage and every step', async (t) => {
  const events = [];
  await xpsr.upscale(img('coffee_32x24.png'), { ...quick, steps: 3, onProgress: (e) => events.push(e) });
  const steps = events.filter((e) => e.stage === 'denoise').map((e) => e.step);
  t.deepEqual(steps, [1, 2, 3]);
  for (const s of ['text', 'encode', 'decode', 'colorfix']) t.true(events.some((e) => e.stage === s), s);
});

test('invalid options are refused with a message naming the option', async (t) => {
  const cases = [
    [{ steps: 0 }, "Invalid option 'steps': expected an integer between 1 and 1000, got 0 (number)"],
    [{ guidanceScale: -1 }, "Invalid option 'guidanceScale': expected a number between 0 and 100, got -1 (number)"],
    [{ scale: 3.5 }, "Invalid option 'scale': expected an integer between 1 and 16, got 3.5 (number)"],
    [{ scheduler: 'euler' }, "Invalid option 'scheduler'"],
    [{ colorFix: 'magic' }, "Invalid option 'colorFix': expected one of 'adain', 'wavelet', 'none'"],
    [{ tiling: 'sometimes' }, "Invalid option 'tiling'"],
  ];
  for (const [opts, msg] of cases) {
    const e = await t.throwsAsync(xpsr.upscale(img('coffee_32x24.png'), { ...quick, ...opts }));
    t.is(e.code, 'ERR_INVALID_OPTION');
    t.true(e.message.startsWith(msg), e.message);
  }
});

test('corrupt, empty and too large images give clear errors and the next call works', async (t) => {
  let e = await t.throwsAsync(xpsr.upscale(Buffer.from('definitely not an image'), quick));
  t.is(e.code, 'ERR_IMAGE_UNREADABLE');
  e = await t.throwsAsync(xpsr.upscale(Buffer.alloc(0), quick));
  t.regex(e.code, /ERR_IMAGE_(EMPTY|UNREADABLE)/);
  e = await t.throwsAsync(xpsr.upscale(img('coffee_32x24.png'), { ...quick, maxInputPixels: 100 }));
  t.is(e.code, 'ERR_IMAGE_TOO_LARGE');
  t.regex(e.message, /maxInputPixels/);
  e = await t.throwsAsync(xpsr.upscale('/nonexistent/photo.png', quick));
  t.regex(e.message, /nonexistent/);
  const r = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(r.width, 128);
});

test('a cancelled call rejects with ERR_CANCELLED and frees the instance for the next call', async (t) => {
  const ctl = new AbortController();
  const p = xpsr.upscale(img('coffee_32x24.png'), { ...quick, steps: 50, signal: ctl.signal,
    onProgress: (e) => e.stage === 'denoise' && e.step === 2 && ctl.abort() });
  const e = await t.throwsAsync(p);
  t.is(e.code, 'ERR_CANCELLED');
  const r = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(r.width, 128);
});

test('upscaleMany keeps input order and reports the image index', async (t) => {
  const seen = new Set();
  const rs = await xpsr.upscaleMany([img('coffee_32x24.png'), img('noise_32x24.png')], { ...quick, onProgress: (e) => seen.add(e.image) });
  t.is(rs.length, 2);
  t.deepEqual([...seen].sort(), [1, 2]);
});

test('latent tiling path runs and blends (tiles smaller than the latent)', async (t) => {
  const r = await xpsr.upscale(img('coffee_64x48.png'), { ...quick, processSize: 128, tiling: { mode: 'on', tileSize: 16, overlap: 4 } });
  t.deepEqual(r.tiled, { tiles: 6, tileSize: 16 }); // latent 32x24: 3 x 2 tiles of 16 with overlap 4
  t.is(r.width, 256);
});

test('missing component folders are listed', async (t) => {
  const empty = mkdtempSync(path.join(tmpdir(), 'xpsr-empty-'));
  const e = await t.throwsAsync(XPSR.load({ sd: empty, xpsr: empty, device: 'cpu' }));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  for (const c of ['text_encoder/', 'tokenizer/', 'vae/', 'unet/', 'controlnet/']) t.true(e.message.includes(c), c);
});

test('dispose is idempotent and a disposed instance refuses work', async (t) => {
  const x = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
  await x.dispose();
  await x.dispose();
  t.true(x.disposed);
  const e = await t.throwsAsync(x.upscale(img('coffee_32x24.png'), quick));
  t.is(e.code, 'ERR_DISPOSED');
});

test('the tiled VAE gives the same image as the untiled one', async (t) => {
  const a = await xpsr.upscale(img('coffee_64x48.png'), { ...quick, processSize: 128, vaeTiling: 'off' });
  const b = await xpsr.upscale(img('coffee_64x48.png'), { ...quick, processSize: 128, vaeTiling: 'on' });
  let worst = 0;
  for (let i = 0; i < a.image.length; i++) worst = Math.max(worst, Math.abs(a.image[i] - b.image[i]));
  t.true(worst <= 1, `max u8 difference ${worst}`);
});

test('other schedulers and long prompts in 77-token chunks run through the pipeline', async (t) => {
  const long = Array.from({ length: 60 }, (_, i) => `word${i} detail`).join(', ');
  for (const scheduler of ['dpmpp', 'unipc']) {
    const r = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, scheduler, steps: 3, longPrompts: 'chunks', prompts: { high: long, low: 'blurry' } });
    t.is(r.timesteps.length, 3, scheduler);
    t.is(r.width, 128);
  }
  const a = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, prompts: { high: long, low: '' } });
  const b = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, longPrompts: 'chunks', prompts: { high: long, low: '' } });
  t.false(a.image.equals(b.image), 'the tokens past 77 change the result in chunks mode');
});
