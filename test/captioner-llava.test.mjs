// LlavaCaptioner (native addon on node-llama-cpp's llama.cpp) on random-weight GGUF models that the test
// writes itself. These tests FAIL when the captioner addon is not built; they are skipped only when
// XPSR_CAPTIONER=off says the captioner was deliberately disabled.
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { CachingCaptioner } from '../dist/lib/captioners/cache.js';
import { LlavaCaptioner } from '../dist/lib/captioners/llava.js';
import { runCaptionCommand } from '../dist/lib/cli/caption.js';
import { captionerDisabled, HIGH, LOW, makeModels, tempDir, testRgb, writeTestPng } from './helpers/gguf-captioner.mjs';
import { createRandomLlava } from './helpers/gguf-random-llava.mjs';
import { GgmlType, ggmlTypeName } from './helpers/gguf-writer.mjs';

const t = captionerDisabled ? test.serial.skip : test.serial;
const tmp = tempDir('xpsr-llava-');
let tiny;
let small;
let img;
let cap;

test.before(() => {
  tiny = makeModels(path.join(tmp.dir, 'm'), 'tiny');
  small = makeModels(path.join(tmp.dir, 'm'), 'small');
  img = writeTestPng(path.join(tmp.dir, 'img', 'photo.png'), 1);
});

test.after.always(async () => {
  await cap?.dispose();
  tmp.cleanup();
});

async function tinyCaptioner() {
  cap ??= await LlavaCaptioner.create({ model: tiny.model, mmproj: tiny.mmproj, maxTokens: 12, threads: 1 });
  return cap;
}

if (captionerDisabled) {
  test('XPSR_CAPTIONER=off: LlavaCaptioner reports that it is disabled', async (tt) => {
    const m = makeModels(path.join(tmp.dir, 'off'), 'tiny');
    const e = await tt.throwsAsync(LlavaCaptioner.create({ model: m.model, mmproj: m.mmproj }));
    tt.is(e.code, 'ERR_NATIVE_MISSING');
    tt.regex(e.message, /XPSR_CAPTIONER=off/);
  });
}

t('loads a tiny LLaVA pair and answers both instructions from one image encoding', async (tt) => {
  const c = await tinyCaptioner();
  tt.is(c.kind, 'llava');
  tt.is(c.variant, 'cpu');
  tt.is(c.info.embeddingSize, 64);
  tt.false(c.info.borrowed);
  const r = await c.captionDetailed(img, [HIGH, LOW]);
  tt.is(r.captions.length, 2);
  for (const s of r.captions) {
    tt.true(s.length > 0);
    tt.false(s.startsWith(' '));
    tt.false(s.includes('\n'));
  }
  tt.is(r.stats.imagePasses, 1);
  tt.is(r.stats.imageTokens, tiny.imageTokens);
  tt.deepEqual(
    r.stats.answers.map((a) => a.generatedTokens),
    [12, 12],
  );
  tt.deepEqual(
    r.stats.answers.map((a) => a.stopReason),
    ['maxTokens', 'maxTokens'],
  );
  tt.true(r.stats.encodeMs >= 0 && r.stats.imagePrefillMs >= 0 && r.stats.answers[0].generateMs >= 0);
  tt.deepEqual(await c.caption(img, [HIGH, LOW]), r.captions, 'greedy decoding is deterministic');
  tt.deepEqual(await c.caption(img, []), []);
});

t('shared image prefix gives the same answers as one full pass per instruction (greedy)', async (tt) => {
  const c = await tinyCaptioner();
  const instr = [HIGH, LOW, 'What is in the picture?'];
  for (const seed of [1, 2, 3]) {
    const image = writeTestPng(path.join(tmp.dir, 'img', `p${seed}.png`), seed * 17, 48, 36);
    const shared = await c.captionDetailed(image, instr);
    const separate = await c.captionDetailed(image, instr, { sharePrefix: false });
    tt.is(shared.stats.imagePasses, 1);
    tt.is(separate.stats.imagePasses, 3);
    tt.deepEqual(shared.raw, separate.raw);
  }
  const s = await LlavaCaptioner.create({ model: small.model, mmproj: small.mmproj, maxTokens: 24, threads: 1 });
  try {
    const a = await s.captionDetailed(img, [HIGH, LOW]);
    const b = await s.captionDetailed(img, [HIGH, LOW], { sharePrefix: false });
    tt.is(a.stats.imageTokens, 64);
    tt.deepEqual(a.raw, b.raw);
  } finally {
    await s.dispose();
  }
});

t('quantized language models (Q4_0, Q8_0, F16) and an F16 mmproj load and caption', async (tt) => {
  for (const textType of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.F16]) {
    const m = createRandomLlava({ dir: path.join(tmp.dir, 'q'), size: 'tiny', textType, mmprojType: GgmlType.F16 });
    const c = await LlavaCaptioner.create({ model: m.model, mmproj: m.mmproj, maxTokens: 8, threads: 1 });
    try {
      const a = await c.captionDetailed(img, [HIGH, LOW]);
      const b = await c.captionDetailed(img, [HIGH, LOW], { sharePrefix: false });
      tt.deepEqual(
        a.stats.answers.map((x) => x.generatedTokens),
        [8, 8],
        ggmlTypeName(textType),
      );
      tt.deepEqual(a.raw, b.raw);
    } finally {
      await c.dispose();
    }
  }
});

t('path, encoded bytes and raw pixels of the same image give the same captions; WebP goes through sharp', async (tt) => {
  const c = await tinyCaptioner();
  const fromPath = await c.caption(img, [HIGH]);
  tt.deepEqual(await c.caption(new Uint8Array(fs.readFileSync(img)), [HIGH]), fromPath);
  tt.deepEqual(await c.caption(testRgb(40, 30, 1), [HIGH]), fromPath);
  const rgba = testRgb(40, 30, 1);
  const data4 = new Uint8Array(40 * 30 * 4);
  for (let i = 0; i < 40 * 30; i++) data4.set([...rgba.data.subarray(i * 3, i * 3 + 3), 7], i * 4);
  tt.deepEqual(await c.caption({ data: data4, width: 40, height: 30, channels: 4 }, [HIGH]), fromPath);
  const { default: sharp } = await import('sharp');
  const webp = await sharp(Buffer.from(rgba.data), { raw: { width: 40, height: 30, channels: 3 } })
    .webp({ lossless: true })
    .toBuffer();
  tt.deepEqual(await c.caption(new Uint8Array(webp), [HIGH]), fromPath);
});

t("bad images give the library's image errors", async (tt) => {
  const c = await tinyCaptioner();
  const bad = await tt.throwsAsync(c.caption(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), [HIGH]));
  tt.is(bad.code, 'ERR_IMAGE_UNREADABLE');
  tt.is(bad.name, 'XpsrError');
  const missing = await tt.throwsAsync(c.caption(path.join(tmp.dir, 'nope.png'), [HIGH]));
  tt.is(missing.code, 'ERR_IMAGE_UNREADABLE');
  tt.regex(missing.message, /nope\.png.*file not found/);
  const empty = path.join(tmp.dir, 'empty.png');
  fs.writeFileSync(empty, '');
  tt.is((await tt.throwsAsync(c.caption(empty, [HIGH]))).code, 'ERR_IMAGE_EMPTY');
  tt.is((await tt.throwsAsync(c.caption(img, ['a <__media__> inside']))).code, 'ERR_INVALID_ARGUMENT');
  const raw = await tt.throwsAsync(c.caption({ data: new Uint8Array(5), width: 4, height: 4 }, [HIGH]));
  tt.is(raw.code, 'ERR_INVALID_ARGUMENT');
  // still usable afterwards
  tt.is((await c.caption(img, [HIGH])).length, 1);
});

t('cancellation with an AbortSignal stops a long generation; the captioner stays usable', async (tt) => {
  const s = await LlavaCaptioner.create({ model: small.model, mmproj: small.mmproj, threads: 1, contextSize: 4096 });
  try {
    const before = await s.caption(img, [HIGH], { maxTokens: 8 });
    const ctl = new AbortController();
    const started = Date.now();
    const p = s.captionDetailed(img, [HIGH, LOW], { maxTokens: 3900, minTokens: 3900, signal: ctl.signal });
    setTimeout(() => ctl.abort(new Error('test abort')), 150);
    const e = await tt.throwsAsync(p);
    tt.is(e.code, 'ERR_CANCELLED');
    tt.regex(e.message, /test abort/);
    const elapsed = Date.now() - started;
    tt.true(elapsed < 30_000, `cancelled after ${elapsed} ms`);
    // an aborted signal rejects before any work
    const pre = await tt.throwsAsync(s.caption(img, [HIGH], { signal: AbortSignal.abort() }));
    tt.is(pre.code, 'ERR_CANCELLED');
    tt.deepEqual(await s.caption(img, [HIGH], { maxTokens: 8 }), before);
  } finally {
    await s.dispose();
  }
});

t('concurrent calls are serialized; dispose cancels the running call and rejects later ones', async (tt) => {
  const s = await LlavaCaptioner.create({ model: small.model, mmproj: small.mmproj, threads: 1, contextSize: 4096, maxTokens: 6 });
  const [a, b, c] = await Promise.all([s.caption(img, [HIGH]), s.caption(img, [HIGH]), s.caption(img, [HIGH])]);
  tt.deepEqual(a, b);
  tt.deepEqual(b, c);
  const long = s.caption(img, [HIGH], { maxTokens: 3900, minTokens: 3900 });
  await new Promise((r) => setTimeout(r, 100));
  await s.dispose();
  const e = await tt.throwsAsync(long);
  tt.true(['ERR_CANCELLED', 'ERR_DISPOSED'].includes(e.code), e.code);
  const after = await tt.throwsAsync(s.caption(img, [HIGH]));
  tt.is(after.code, 'ERR_DISPOSED');
  await s.dispose(); // idempotent
});

t('a corrupt GGUF, a missing or mismatched mmproj each give a clear error', async (tt) => {
  const dir = path.join(tmp.dir, 'bad');
  fs.mkdirSync(dir, { recursive: true });
  const notGguf = path.join(dir, 'not.gguf');
  fs.writeFileSync(notGguf, 'this is not a model file at all');
  let e = await tt.throwsAsync(LlavaCaptioner.create({ model: notGguf, mmproj: tiny.mmproj }));
  tt.is(e.code, 'ERR_WEIGHTS_INVALID');
  tt.deepEqual(e.details, { file: notGguf, role: 'model' });
  tt.regex(e.message, /not a GGUF/);

  const truncated = path.join(dir, 'truncated-model.gguf');
  fs.writeFileSync(truncated, fs.readFileSync(tiny.model).subarray(0, 50_000));
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: truncated, mmproj: tiny.mmproj }));
  tt.is(e.code, 'ERR_WEIGHTS_INVALID');
  tt.deepEqual(e.details, { file: truncated, role: 'model' });
  tt.regex(e.message, /could not load the language model.*truncated/);

  const truncMm = path.join(dir, 'truncated-mmproj.gguf');
  fs.writeFileSync(truncMm, fs.readFileSync(tiny.mmproj).subarray(0, 20_000));
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: tiny.model, mmproj: truncMm }));
  tt.is(e.code, 'ERR_WEIGHTS_INVALID');
  tt.is(e.details.role, 'mmproj');
  tt.regex(e.message, /truncated/);

  e = await tt.throwsAsync(LlavaCaptioner.create({ model: tiny.model, mmproj: path.join(dir, 'missing-mmproj.gguf') }));
  tt.is(e.code, 'ERR_WEIGHTS_MISSING');
  tt.is(e.details.role, 'mmproj');
  tt.regex(e.message, /mmproj .*not found/);
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: tiny.model }));
  tt.is(e.code, 'ERR_INVALID_OPTION');
  tt.is(e.details.option, 'mmproj');
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: path.join(dir, 'missing.gguf'), mmproj: tiny.mmproj }));
  tt.is(e.code, 'ERR_WEIGHTS_MISSING');
  tt.is(e.details.role, 'model');
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: tiny.model, mmproj: tiny.mmproj, contextSize: 10 }));
  tt.is(e.details.option, 'contextSize');

  // projector width 256 (small) vs language model width 64 (tiny)
  e = await tt.throwsAsync(LlavaCaptioner.create({ model: tiny.model, mmproj: small.mmproj }));
  tt.is(e.code, 'ERR_WEIGHTS_INVALID');
  tt.is(e.details.role, 'mmproj');
  tt.regex(e.message, /multimodal projector/);
});

t('shares the weights of a node-llama-cpp LlamaModel; disposing the model disposes the captioner', async (tt) => {
  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ build: 'never', gpu: false });
  const model = await llama.loadModel({ modelPath: tiny.model });
  const own = await tinyCaptioner();
  const shared = await LlavaCaptioner.create({ llamaModel: model, mmproj: tiny.mmproj, maxTokens: 12, threads: 1 });
  tt.true(shared.info.borrowed);
  tt.is(shared.id, own.id, 'same model file, same cache identity');
  tt.deepEqual(await shared.caption(img, [HIGH, LOW]), await own.caption(img, [HIGH, LOW]));
  // node-llama-cpp keeps working on the model
  const ctx = await model.createContext({ contextSize: 256, threads: 1 });
  const seq = ctx.getSequence();
  let n = 0;
  for await (const tok of seq.evaluate(model.tokenize('hello world'))) {
    tt.is(typeof tok, 'number');
    if (++n >= 3) break;
  }
  await ctx.dispose();
  await model.dispose();
  tt.true(shared.disposed);
  const e = await tt.throwsAsync(shared.caption(img, [HIGH]));
  tt.is(e.code, 'ERR_DISPOSED');
});

t('sampling with temperature is reproducible with a seed; a small context stops generation cleanly', async (tt) => {
  const c = await tinyCaptioner();
  const a = await c.caption(img, [HIGH], { temperature: 0.8, seed: 42, maxTokens: 16 });
  const b = await c.caption(img, [HIGH], { temperature: 0.8, seed: 42, maxTokens: 16 });
  tt.deepEqual(a, b);
  const s = await LlavaCaptioner.create({ model: tiny.model, mmproj: tiny.mmproj, contextSize: 64, threads: 1 });
  try {
    const r = await s.captionDetailed(img, [HIGH, LOW], { maxTokens: 500 });
    tt.deepEqual(
      r.stats.answers.map((x) => x.stopReason),
      ['contextFull', 'contextFull'],
    );
    const tooSmall = await LlavaCaptioner.create({
      model: tiny.model,
      mmproj: tiny.mmproj,
      contextSize: 64,
      threads: 1,
      promptTemplate: `<image>\nUSER: {instruction} ${'padding '.repeat(40)}\nASSISTANT:`,
    });
    const e = await tt.throwsAsync(tooSmall.caption(img, [HIGH]));
    tt.is(e.code, 'ERR_INVALID_OPTION');
    tt.is(e.details.option, 'contextSize');
    tt.regex(e.message, /contextSize/);
    await tooSmall.dispose();
    const bare = await LlavaCaptioner.create({ model: tiny.model, mmproj: tiny.mmproj, threads: 1, promptTemplate: '<image>{instruction}' });
    tt.is((await tt.throwsAsync(bare.caption(img, ['']))).code, 'ERR_INVALID_ARGUMENT');
    tt.is((await bare.caption(img, [' describe'], { maxTokens: 3 })).length, 1);
    await bare.dispose();
  } finally {
    await s.dispose();
  }
});

t('a caching wrapper does not caption the same image content twice', async (tt) => {
  const c = await tinyCaptioner();
  const cacheDir = path.join(tmp.dir, 'cache');
  const cached = new CachingCaptioner(c, { dir: cacheDir });
  const copy = path.join(tmp.dir, 'img', 'copy-of-photo.png');
  fs.copyFileSync(img, copy);
  const first = await cached.caption(img, [HIGH, LOW]);
  tt.is(cached.cache.misses, 2);
  tt.deepEqual(await cached.caption(copy, [HIGH, LOW]), first);
  tt.is(cached.cache.hits, 2);
  // a new process-level cache finds the answers on disk
  const again = new CachingCaptioner(
    {
      kind: 'llava',
      id: c.id,
      cacheable: true,
      caption: () => {
        throw new Error('must not caption again');
      },
      dispose: async () => {},
    },
    { dir: cacheDir },
  );
  tt.deepEqual(await again.caption(img, [HIGH, LOW]), first);
});

t('xpsr caption on the tiny models: prints, writes the official layout (resumable) and JSON lines', async (tt) => {
  const out = [];
  const err = [];
  const io = { stdout: { write: (s) => out.push(s) }, stderr: { write: (s) => err.push(s) } };
  const images = path.join(tmp.dir, 'cli');
  writeTestPng(path.join(images, 'a.png'), 3);
  writeTestPng(path.join(images, 'b.png'), 4);
  const common = ['--llava-model', tiny.model, '--llava-mmproj', tiny.mmproj, '--caption-max-tokens', '6', '--llava-threads', '1'];
  tt.is(await runCaptionCommand([...common, images], io), 0, err.join(''));
  tt.regex(out.join(''), /a\.png\n {2}high: \S.*\n {2}low: \S.*\n/);

  const dest = path.join(tmp.dir, 'dataset');
  tt.is(await runCaptionCommand([...common, '--out', dest, images], io), 0, err.join(''));
  const high = fs.readFileSync(path.join(dest, 'highlevel_prompt', 'a.txt'), 'utf8');
  const low = fs.readFileSync(path.join(dest, 'lowlevel_prompt_q', 'b.txt'), 'utf8');
  tt.true(high.length > 0 && low.length > 0);
  err.length = 0;
  tt.is(await runCaptionCommand([...common, '--out', dest, images], io), 0);
  tt.regex(err.join(''), /captions exist, skipped/);

  out.length = 0;
  tt.is(await runCaptionCommand([...common, '--jsonl', '-q', path.join(images, 'a.png')], io), 0);
  const line = JSON.parse(out.join('').trim());
  tt.is(line.name, 'a');
  tt.is(line.high, high);
});

t('the image left in the cache by one call is reused by the next call on the same image', async (tt) => {
  const c = await tinyCaptioner();
  const both = await c.captionDetailed(img, [HIGH, LOW]);
  const first = await c.captionDetailed(img, [HIGH]);
  tt.true(first.stats.prefixReused, 'the same image as the call before');
  tt.is(first.stats.imagePasses, 0);
  const second = await c.captionDetailed(img, [LOW]);
  tt.true(second.stats.prefixReused);
  tt.deepEqual([first.raw[0], second.raw[0]], both.raw, 'the same answers as one call');
  tt.is(second.stats.imageTokens, tiny.imageTokens);
  // another image, or a pass without the shared prefix, evaluates the image again
  const other = writeTestPng(path.join(tmp.dir, 'img', 'other.png'), 9);
  const o = await c.captionDetailed(other, [HIGH]);
  tt.false(o.stats.prefixReused);
  tt.is(o.stats.imagePasses, 1);
  await c.captionDetailed(img, [HIGH], { sharePrefix: false });
  const again = await c.captionDetailed(img, [LOW]);
  tt.false(again.stats.prefixReused);
  tt.deepEqual(again.raw, second.raw);
  // a cancelled call leaves nothing to reuse
  const ctl = new AbortController();
  ctl.abort();
  await tt.throwsAsync(c.captionDetailed(img, [HIGH], { signal: ctl.signal }));
  tt.deepEqual((await c.captionDetailed(img, [LOW])).raw, second.raw);
});

t("one model per caption (LLaVA high, another model low): each caption is that model's own", async (tt) => {
  const { captionXpsr, createCaptionerFromOptions } = await import('../dist/lib/captioners/factory.js');
  const other = makeModels(path.join(tmp.dir, 'm'), 'tiny', 99);
  const a = await tinyCaptioner();
  const b = await LlavaCaptioner.create({ model: other.model, mmproj: other.mmproj, maxTokens: 12, threads: 1 });
  try {
    const aAlone = await a.caption(img, [HIGH, LOW]);
    const bAlone = await b.caption(img, [HIGH, LOW]);
    tt.notDeepEqual(aAlone, bAlone, 'two different models');
    const one = await captionXpsr(a, img);
    tt.deepEqual(one, { high: aAlone[0], low: aAlone[1] });
    const two = await captionXpsr({ high: a, low: b }, img);
    tt.deepEqual(two, { high: aAlone[0], low: bAlone[1] });
    tt.not(two.low, one.low, "the low-level caption is the second model's");
    const same = await captionXpsr({ high: a, low: a }, img);
    tt.deepEqual(same, one);
  } finally {
    await b.dispose();
  }

  // factory: the same files for both captions load one model; other files load a second one
  const common = { llavaModel: tiny.model, llavaMmproj: tiny.mmproj, maxTokens: 12, threads: 1, captionCache: false };
  const single = await createCaptionerFromOptions({ ...common, llavaLowModel: tiny.model });
  tt.is(single.kind, 'llava', 'no pair: one model answers both from one image encoding');
  await single.dispose();
  const pair = await createCaptionerFromOptions({ ...common, llavaLowModel: other.model, llavaLowMmproj: other.mmproj });
  try {
    tt.is(pair.kind, 'pair');
    tt.is(pair.low.kind, 'llava');
    tt.not(pair.high, pair.low);
    const viaFactory = await captionXpsr(pair, img);
    const b2 = await LlavaCaptioner.create({ model: other.model, mmproj: other.mmproj, maxTokens: 12, threads: 1 });
    tt.deepEqual(viaFactory, { high: (await a.caption(img, [HIGH]))[0], low: (await b2.caption(img, [LOW]))[0] });
    await b2.dispose();
  } finally {
    await pair.dispose();
  }
  const e = await tt.throwsAsync(createCaptionerFromOptions({ ...common, llavaLowModel: path.join(tmp.dir, 'no-such-low.gguf') }));
  tt.is(e.code, 'ERR_WEIGHTS_MISSING');
});

t('--llava-low-model / --llava-low-mmproj in xpsr caption and xpsr upscale', async (tt) => {
  const { spawnSync } = await import('node:child_process');
  const { fixtures, model } = await import('./helpers/fixtures.mjs');
  const other = makeModels(path.join(tmp.dir, 'm'), 'tiny', 99);
  const photo = path.join(fixtures, 'images', 'coffee_32x24.png');
  const flags = ['--llava-model', tiny.model, '--llava-mmproj', tiny.mmproj, '--caption-max-tokens', '6', '--llava-threads', '1'];
  const low = ['--llava-low-model', other.model, '--llava-low-mmproj', other.mmproj];
  const alone = async (m, instruction) => {
    const c = await LlavaCaptioner.create({ model: m.model, mmproj: m.mmproj, maxTokens: 6, threads: 1 });
    try {
      return (await c.caption(photo, [instruction]))[0];
    } finally {
      await c.dispose();
    }
  };
  const expected = { high: await alone(tiny, HIGH), low: await alone(other, LOW) };
  const oneModelLow = await alone(tiny, LOW);
  tt.not(expected.low, oneModelLow);

  const out = [];
  const io = { stdout: { write: (s) => out.push(s) }, stderr: { write: () => {} } };
  tt.is(await runCaptionCommand([...flags, ...low, '--jsonl', photo], io), 0);
  const line = JSON.parse(out.join('').trim());
  tt.deepEqual({ high: line.high, low: line.low }, expected);

  const bin = path.join(process.cwd(), 'dist', 'lib', 'cli', 'main.js');
  const r = spawnSync(
    process.execPath,
    [
      bin,
      'upscale',
      photo,
      '-o',
      path.join(tmp.dir, 'up.png'),
      '--model',
      model,
      '--device',
      'cpu',
      '--steps',
      '2',
      '--process-size',
      '64',
      '--seed',
      '3',
      ...flags,
      ...low,
      '--json',
    ],
    { encoding: 'utf8', timeout: 300_000 },
  );
  tt.is(r.status, 0, r.stderr);
  const done = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .find((ev) => ev.event === 'done');
  tt.deepEqual(done.prompts, expected);
});

t('XPSR.upscale with captioner { high, low }', async (tt) => {
  const { XPSR } = await import('../dist/lib/index.js');
  const { fixtures, model } = await import('./helpers/fixtures.mjs');
  const other = makeModels(path.join(tmp.dir, 'm'), 'tiny', 99);
  const photo = path.join(fixtures, 'images', 'coffee_32x24.png');
  const a = await tinyCaptioner();
  const b = await LlavaCaptioner.create({ model: other.model, mmproj: other.mmproj, maxTokens: 12, threads: 1 });
  const xpsr = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
  try {
    const r = await xpsr.upscale(photo, { steps: 2, processSize: 64, seed: 3, captioner: { high: a, low: b } });
    tt.deepEqual(r.prompts, { high: (await a.caption(photo, [HIGH]))[0], low: (await b.caption(photo, [LOW]))[0] });
  } finally {
    await xpsr.dispose();
    await b.dispose();
  }
});
