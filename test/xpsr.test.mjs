// The public XPSR API on the bundled tiny model: results, determinism, alpha, options validation,
// cancellation, bad images and disposal. Every failure is an error value; the instance keeps serving.
import test from 'ava';
import path from 'node:path';
import { mkdtempSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import sharp from 'sharp';
import { XPSR, NoiseSource, readImageMetadata } from '../dist/lib/index.js';
import { checkProcessingSize } from '../dist/lib/pipeline/memory.js';
import { fixtures, model } from './helpers/fixtures.mjs';
import { pngHeader } from './corpus/images.mjs';

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
  for (const s of ['text', 'encode', 'decode', 'colorfix'])
    t.true(
      events.some((e) => e.stage === s),
      s,
    );
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
  const p = xpsr.upscale(img('coffee_32x24.png'), {
    ...quick,
    steps: 50,
    signal: ctl.signal,
    onProgress: (e) => e.stage === 'denoise' && e.step === 2 && ctl.abort(),
  });
  const e = await t.throwsAsync(p);
  t.is(e.code, 'ERR_CANCELLED');
  const r = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(r.width, 128);
});

test('upscaleMany keeps input order and reports the image index', async (t) => {
  const seen = new Set();
  const rs = await xpsr.upscaleMany([img('coffee_32x24.png'), img('noise_32x24.png')], { ...quick, onProgress: (e) => seen.add(e.image) });
  t.deepEqual(
    rs.map((r) => r.ok),
    [true, true],
  );
  t.is(rs[1].input, img('noise_32x24.png'));
  t.is(rs[1].result.width, 128);
  t.deepEqual([...seen].sort(), [1, 2]);
});

test('upscaleMany keeps the finished images when a later one fails, and after a cancellation', async (t) => {
  const rs = await xpsr.upscaleMany([img('coffee_32x24.png'), Buffer.from('not an image'), img('noise_32x24.png')], quick);
  t.deepEqual(
    rs.map((r) => r.ok),
    [true, false, true],
  );
  t.is(rs[0].result.width, 128);
  t.is(rs[1].error.code, 'ERR_IMAGE_UNREADABLE');
  t.true(rs[2].result.image.length > 0);
  const ctl = new AbortController();
  const cancelled = await xpsr.upscaleMany([img('coffee_32x24.png'), img('noise_32x24.png'), img('coffee_32x24.png')], {
    ...quick,
    signal: ctl.signal,
    onProgress: (e) => e.image === 1 && e.stage === 'colorfix' && ctl.abort(),
  });
  t.deepEqual(
    cancelled.map((r) => r.ok),
    [true, false, false],
  );
  t.deepEqual(
    cancelled.slice(1).map((r) => r.error.code),
    ['ERR_CANCELLED', 'ERR_CANCELLED'],
  );
  // invalid options are refused for the whole batch, before any image
  t.is((await t.throwsAsync(xpsr.upscaleMany([img('coffee_32x24.png')], { steps: -1 }))).code, 'ERR_INVALID_OPTION');
});

test('a queued call whose signal aborts rejects at once and never runs', async (t) => {
  const order = [];
  const first = xpsr.upscale(img('coffee_32x24.png'), { ...quick, steps: 12 }).then(() => order.push('first done'));
  const ctl = new AbortController();
  let secondRan = false;
  const second = xpsr.upscale(img('coffee_32x24.png'), { ...quick, signal: ctl.signal, onProgress: () => (secondRan = true) }).catch((e) => {
    order.push('second rejected');
    return e;
  });
  const third = xpsr.upscale(img('coffee_32x24.png'), quick).then((r) => (order.push('third done'), r));
  setTimeout(() => ctl.abort(), 20);
  const e = await second;
  t.is(e.code, 'ERR_CANCELLED');
  await Promise.all([first, third]);
  t.deepEqual(order, ['second rejected', 'first done', 'third done']); // the third still waited for the first
  t.false(secondRan);
});

test('an onProgress that throws or rejects never causes an unhandled rejection; the run completes', async (t) => {
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  const notices = [];
  const x = await XPSR.load({ model, device: 'cpu', onNotice: (m) => notices.push(m) });
  try {
    let calls = 0;
    const r = await x.upscale(img('coffee_32x24.png'), {
      ...quick,
      steps: 3,
      onProgress: async () => {
        calls++;
        throw new Error('observer bug');
      },
    });
    t.is(r.width, 128);
    t.true(calls >= 5);
    const r2 = await x.upscale(img('coffee_32x24.png'), {
      ...quick,
      onProgress: () => {
        throw new Error('sync observer bug');
      },
    });
    t.is(r2.width, 128);
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.deepEqual(unhandled, []);
    const failures = notices.filter((m) => /onProgress failed/.test(m));
    t.is(failures.length, 2, 'one notice per call');
    t.regex(failures[0], /observer bug/);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await x.dispose();
  }
});

test('the reported seed is null when the call supplies its own noise', async (t) => {
  const r = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, noise: new NoiseSource(7) });
  t.is(r.seed, null);
  const s = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(s.seed, 7);
  t.true(r.image.equals(s.image), 'the same draws as seed 7');
  t.is((await t.throwsAsync(xpsr.upscale(img('coffee_32x24.png'), { ...quick, noise: {} }))).code, 'ERR_INVALID_OPTION');
});

test('toFile writes atomically and fails with coded errors, never a partial file', async (t) => {
  const r = await xpsr.upscale(img('coffee_32x24.png'), quick);
  const dir = mkdtempSync(path.join(tmpdir(), 'xpsr-tofile-'));
  let e = await t.throwsAsync(r.toFile(path.join(dir, 'missing', 'x.png')));
  t.is(e.code, 'ERR_IO');
  t.regex(e.message, /folder does not exist/);
  e = await t.throwsAsync(r.toFile(path.join(dir, 'x.bmp')));
  t.is(e.code, 'ERR_UNSUPPORTED');
  mkdirSync(path.join(dir, 'taken.png'));
  e = await t.throwsAsync(r.toFile(path.join(dir, 'taken.png')));
  t.is(e.code, 'ERR_IO');
  t.deepEqual(readdirSync(dir).sort(), ['taken.png'], 'no temporary or partial file is left');
  await r.toFile(path.join(dir, 'ok.png'));
  t.deepEqual(readdirSync(dir).sort(), ['ok.png', 'taken.png']);
  t.is((await sharp(path.join(dir, 'ok.png')).metadata()).width, 128);
});

test('seed, prompts, model and device are embedded on request and read back', async (t) => {
  const r = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, prompts: { high: 'un café <noir> & "chaud"', low: 'flou' } });
  const dir = mkdtempSync(path.join(tmpdir(), 'xpsr-meta-'));
  for (const f of ['m.png', 'm.jpg', 'm.webp', 'm.tif']) {
    await r.toFile(path.join(dir, f), { metadata: true });
    const m = await readImageMetadata(path.join(dir, f));
    t.is(m.seed, '7', f);
    t.is(m['prompt-high'], 'un café <noir> & "chaud"', f);
    t.is(m['prompt-low'], 'flou');
    t.is(m.model, 'model');
    t.is(m.device, 'cpu');
    t.is(m.steps, '2');
    t.regex(m.software, /^xpsr-native /);
  }
  await r.toFile(path.join(dir, 'plain.png'));
  t.deepEqual(await readImageMetadata(path.join(dir, 'plain.png')), {}, 'nothing embedded by default');
  const own = await readImageMetadata(await r.toBuffer('png', { metadata: { note: 'mine' } }));
  t.deepEqual(own, { note: 'mine' });
});

test('a thin strip is refused before decoding, with the limit in API terms', async (t) => {
  const strip = await sharp({ create: { width: 1000, height: 1, channels: 3, background: 'gray' } })
    .png()
    .toBuffer();
  let e = await t.throwsAsync(xpsr.upscale(strip, { ...quick, processSize: 512 }));
  t.is(e.code, 'ERR_IMAGE_TOO_LARGE');
  t.regex(e.message, /1000x1, an aspect ratio of 1000:1, more than 'maxAspectRatio' \(16\)/);
  t.regex(e.message, /would be processed at 512000x512/);
  // allowed by the ratio, it still cannot fit in memory: said so, with the options to change
  e = await t.throwsAsync(xpsr.upscale(strip, { ...quick, processSize: 512, maxAspectRatio: 1000 }));
  t.is(e.code, 'ERR_IMAGE_TOO_LARGE');
  t.regex(e.message, /GiB of host memory.*'scale' or 'processSize'/);
  t.is((await t.throwsAsync(xpsr.upscale(strip, { ...quick, maxAspectRatio: 2000 }))).code, 'ERR_INVALID_OPTION');
  const ok = await xpsr.upscale(img('coffee_32x24.png'), quick);
  t.is(ok.width, 128);
});

test('size advice never suggests a value the validator rejects', (t) => {
  const base = { what: "'x'", width: 40, height: 1, processedWidth: 20480, processedHeight: 512, maxAspectRatio: 16, maxAspectRatioLimit: 1024 };
  let e = t.throws(() => checkProcessingSize({ ...base, hostBytes: 1e9, hostBudget: 2e9 }));
  t.regex(e.message, /raise 'maxAspectRatio' to at least 40 to process it/i);
  e = t.throws(() => checkProcessingSize({ ...base, width: 5000, hostBytes: 1e9, hostBudget: 2e9 }));
  t.regex(e.message, /largest accepted 'maxAspectRatio' is 1024; crop it/i);
  t.notRegex(e.message, /at least 5000/);
  e = t.throws(() => checkProcessingSize({ ...base, hostBytes: 4e9, hostBudget: 2e9 }));
  t.regex(e.message, /would need about 3\.7 GiB/i);
  t.notThrows(() => checkProcessingSize({ ...base, width: 16, hostBytes: 1e9, hostBudget: 2e9 }));
  e = t.throws(() => checkProcessingSize({ ...base, width: 16, hostBytes: 4e9, hostBudget: 2e9 }));
  t.is(e.code, 'ERR_IMAGE_TOO_LARGE');
});

test('an input over maxInputPixels gets advice within the validator bounds', async (t) => {
  let e = await t.throwsAsync(xpsr.upscale(img('coffee_32x24.png'), { ...quick, maxInputPixels: 100 }));
  t.regex(e.message, /raise 'maxInputPixels' to at least 1000000/);
  // a header declaring 100000 x 100000 pixels (1e10 > the largest accepted limit, 2^32)
  const huge = pngHeader(100000, 100000);
  e = await t.throwsAsync(xpsr.upscale(huge, quick));
  t.is(e.code, 'ERR_IMAGE_TOO_LARGE');
  t.regex(e.message, /more than the largest accepted 'maxInputPixels' \(4294967296\)/);
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
    const r = await xpsr.upscale(img('coffee_32x24.png'), {
      ...quick,
      scheduler,
      steps: 3,
      longPrompts: 'chunks',
      prompts: { high: long, low: 'blurry' },
    });
    t.is(r.timesteps.length, 3, scheduler);
    t.is(r.width, 128);
  }
  const a = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, prompts: { high: long, low: '' } });
  const b = await xpsr.upscale(img('coffee_32x24.png'), { ...quick, longPrompts: 'chunks', prompts: { high: long, low: '' } });
  t.false(a.image.equals(b.image), 'the tokens past 77 change the result in chunks mode');
});
