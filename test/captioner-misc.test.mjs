// Captioning pieces that need no native code: instructions and post-processing, fixed and sidecar
// captioners, the cache, the factory, the GGUF writer, and `xpsr caption` with fixed/sidecar captions.
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { CaptionCache, CachingCaptioner } from '../dist/lib/captioners/cache.js';
import { runCaptionCommand, CAPTION_HELP } from '../dist/lib/captioners/cli.js';
import { captionXpsr, createCaptionerFromOptions } from '../dist/lib/captioners/factory.js';
import { FixedCaptioner, SidecarCaptioner } from '../dist/lib/captioners/fixed.js';
import { describeGgufProblem } from '../dist/lib/captioners/gguf-check.js';
import { floatToHalf, GgmlType, gguf, tensorByteSize, uniformFill, writeGguf } from '../dist/lib/captioners/gguf-writer.js';
import { encodePngRgb, imageContentHash, loadImage, sniffImageMime } from '../dist/lib/captioners/image.js';
import {
  firstLineLeftStripped, LLAVA15_PROMPT_TEMPLATE, postprocessCaption, splitPromptTemplate, XPSR_INSTRUCTIONS,
} from '../dist/lib/captioners/instructions.js';
import * as api from '../dist/lib/captioners/index.js';
import { HIGH, LOW, makeModels, tempDir, testRgb, writeTestPng } from './helpers/gguf-captioner.mjs';

const tmp = tempDir('xpsr-capmisc-');
test.after.always(() => tmp.cleanup());

class CountingCaptioner {
  kind = 'count';
  cacheable = true;
  calls = [];
  constructor(id = 'count:1') { this.id = id; }
  async caption(image, instructions) {
    this.calls.push(instructions);
    return instructions.map((s) => `answer to ${s}`);
  }
  async dispose() { this.disposed = true; }
}

test('XPSR instructions, LLaVA-1.5 prompt format and post-processing (spec section 8)', (t) => {
  t.is(XPSR_INSTRUCTIONS.high, 'Please provide a descriptive summary of the content of this image.');
  t.is(XPSR_INSTRUCTIONS.low, 'Describe and evaluate the quality of the image.');
  t.is(LLAVA15_PROMPT_TEMPLATE, '<image>\nUSER: {instruction} \nASSISTANT:');
  const s = splitPromptTemplate(LLAVA15_PROMPT_TEMPLATE, '<__media__>');
  t.is(s.prefix, '<__media__>');
  t.is(s.suffix(HIGH), `\nUSER: ${HIGH} \nASSISTANT:`);
  const v = splitPromptTemplate('SYS USER: <image>\n{instruction} ASSISTANT:', '<M>');
  t.is(v.prefix, 'SYS USER: <M>');
  t.is(v.suffix('q'), '\nq ASSISTANT:');
  t.throws(() => splitPromptTemplate('{instruction} <image>', 'M'), { message: /before the instruction/ });
  t.throws(() => splitPromptTemplate('no image {instruction}', 'M'));
  t.throws(() => splitPromptTemplate('<image> <image> {instruction}', 'M'));
  t.is(postprocessCaption(' The image shows\na cat.\n'), 'The image shows a cat. ');
  t.is(postprocessCaption('USER: x ASSISTANT: first ASSISTANT:  second\nline'), 'second line');
  t.is(firstLineLeftStripped('  \tA dog.\nsecond line'), 'A dog.');
  t.is(firstLineLeftStripped('\ufeffBOM line\r\nx'), 'BOM line');
  t.is(firstLineLeftStripped(''), '');
});

test('fixed captions per slot, with a fallback for missing slots', async (t) => {
  const f = new FixedCaptioner({ answers: ['a high caption', 'a low caption'] });
  t.false(f.cacheable);
  t.deepEqual(await f.caption('ignored.png', [HIGH, LOW]), ['a high caption', 'a low caption']);
  const inner = new CountingCaptioner();
  const g = new FixedCaptioner({ answers: [undefined, 'fixed low'], fallback: inner });
  t.deepEqual(await g.caption('x.png', [HIGH, LOW]), [`answer to ${HIGH}`, 'fixed low']);
  t.deepEqual(inner.calls, [[HIGH]]);
  const e = await t.throwsAsync(new FixedCaptioner({ answers: ['only one'] }).caption('x.png', [HIGH, LOW]));
  t.is(e.code, 'ERR_CAPTION_MISSING');
  await g.dispose();
  t.true(inner.disposed);
});

test('sidecar files in the official layout: first line, left-stripped', async (t) => {
  const root = path.join(tmp.dir, 'dataset');
  const lr = writeTestPng(path.join(root, 'LR', '0001.png'));
  fs.mkdirSync(path.join(root, 'highlevel_prompt'), { recursive: true });
  fs.mkdirSync(path.join(root, 'lowlevel_prompt_q'), { recursive: true });
  fs.writeFileSync(path.join(root, 'highlevel_prompt', '0001.txt'), '   A red car on a street.\nignored second line\n');
  fs.writeFileSync(path.join(root, 'lowlevel_prompt_q', '0001.txt'), '');
  const s = new SidecarCaptioner();
  t.deepEqual(await s.caption(lr, [HIGH, LOW]), ['A red car on a street.', '']);
  t.deepEqual(await new SidecarCaptioner({ root }).caption(new Uint8Array(fs.readFileSync(lr)), [HIGH, LOW], { name: '0001' }),
    ['A red car on a street.', '']);
  const other = writeTestPng(path.join(root, 'LR', '0002.png'));
  const e = await t.throwsAsync(s.caption(other, [HIGH, LOW]));
  t.is(e.code, 'ERR_CAPTION_MISSING');
  t.regex(e.message, /highlevel_prompt.0002\.txt/);
  t.deepEqual(await new SidecarCaptioner({ missing: 'empty' }).caption(other, [HIGH, LOW]), ['', '']);
  const inner = new CountingCaptioner();
  t.deepEqual(await new SidecarCaptioner({ fallback: inner }).caption(other, [HIGH, LOW]), [`answer to ${HIGH}`, `answer to ${LOW}`]);
  t.is((await t.throwsAsync(s.caption(new Uint8Array([1]), [HIGH]))).code, 'ERR_INVALID_ARGUMENT');
});

test('cache: keyed by image content + captioner id + instruction + generation options; memory and disk', async (t) => {
  const dir = path.join(tmp.dir, 'cache');
  const a = writeTestPng(path.join(tmp.dir, 'c', 'a.png'), 1);
  const sameContent = path.join(tmp.dir, 'c', 'same.png');
  fs.copyFileSync(a, sameContent);
  const b = writeTestPng(path.join(tmp.dir, 'c', 'b.png'), 2);
  const inner = new CountingCaptioner();
  const c = new CachingCaptioner(inner, { dir });
  t.is(c.id, inner.id);
  await c.caption(a, [HIGH, LOW]);
  await c.caption(sameContent, [HIGH, LOW]);
  t.is(inner.calls.length, 1, 'same bytes under another name: cached');
  await c.caption(a, [HIGH, 'another instruction']);
  t.deepEqual(inner.calls[1], ['another instruction'], 'only the missing instruction is generated');
  await c.caption(b, [HIGH]);
  await c.caption(a, [HIGH], { maxTokens: 5 });
  t.is(inner.calls.length, 4, 'other image and other generation options miss');
  // disk: a fresh cache (new process) answers without the captioner
  const inner2 = new CountingCaptioner();
  t.deepEqual(await new CachingCaptioner(inner2, { dir }).caption(a, [HIGH, LOW]), [`answer to ${HIGH}`, `answer to ${LOW}`]);
  t.is(inner2.calls.length, 0);
  // another model: miss
  const inner3 = new CountingCaptioner('count:other-model');
  await new CachingCaptioner(inner3, { dir }).caption(a, [HIGH]);
  t.is(inner3.calls.length, 1);
  // raw pixels hash by content
  const shared = new CaptionCache();
  const inner4 = new CountingCaptioner();
  const c4 = new CachingCaptioner(inner4, shared);
  await c4.caption(testRgb(4, 4), [HIGH]);
  await c4.caption(testRgb(4, 4), [HIGH]);
  t.is(inner4.calls.length, 1);
  t.is(shared.hits, 1);
  // corrupt disk entries are misses
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => f.endsWith('.json'));
  t.true(files.length >= 4);
  for (const f of files) fs.writeFileSync(path.join(dir, f), '{bad json');
  const inner5 = new CountingCaptioner();
  await new CachingCaptioner(inner5, { dir }).caption(a, [HIGH]);
  t.is(inner5.calls.length, 1);
  // non-cacheable captioners are passed through
  const fixed = new FixedCaptioner({ answers: ['x'] });
  t.deepEqual(await new CachingCaptioner(fixed).caption(a, [HIGH]), ['x']);
});

test('images: loading, hashing, MIME sniffing, PNG encoding', async (t) => {
  const png = encodePngRgb(testRgb(5, 3).data, 5, 3);
  t.is(sniffImageMime(png), 'image/png');
  t.is(sniffImageMime(new Uint8Array([0xff, 0xd8, 0xff, 0xe0])), 'image/jpeg');
  t.is(sniffImageMime(new Uint8Array([1, 2, 3])), undefined);
  const { default: sharp } = await import('sharp');
  const meta = await sharp(Buffer.from(png)).raw().toBuffer({ resolveWithObject: true });
  t.deepEqual([meta.info.width, meta.info.height, meta.info.channels], [5, 3, 3]);
  t.deepEqual(new Uint8Array(meta.data), testRgb(5, 3).data);
  const a = await loadImage(png);
  const b = await loadImage(new Uint8Array(png));
  t.is(imageContentHash(a), imageContentHash(b));
  t.not(imageContentHash(await loadImage(testRgb(5, 3))), imageContentHash(a));
  t.is((await t.throwsAsync(loadImage(42))).code, 'ERR_INVALID_ARGUMENT');
  t.is((await t.throwsAsync(loadImage(new Uint8Array(0)))).code, 'ERR_IMAGE_DECODE');
});

test('GGUF writer: layout readable by node-llama-cpp, f16 conversion, quantized sizes; problems are described', async (t) => {
  t.is(floatToHalf(1), 0x3c00);
  t.is(floatToHalf(-2), 0xc000);
  t.is(floatToHalf(65504), 0x7bff);
  t.is(floatToHalf(1e6), 0x7c00);
  t.is(floatToHalf(5.960464477539063e-8), 0x0001);
  t.is(floatToHalf(0), 0);
  t.is(tensorByteSize(GgmlType.Q4_0, [64, 3]), 6 * 18);
  t.is(tensorByteSize(GgmlType.Q8_0, [32, 2]), 2 * 34);
  t.throws(() => tensorByteSize(GgmlType.Q4_0, [48, 1]));
  const file = path.join(tmp.dir, 'w.gguf');
  const size = writeGguf(file, {
    'general.architecture': gguf.str('llama'), 'x.u32': gguf.u32(7), 'x.arr': gguf.arr(8, ['a', 'bc']),
  }, [
    { name: 'a', ne: [64, 2], type: GgmlType.Q4_0, fill: uniformFill(1, 1) },
    { name: 'b', ne: [3], type: GgmlType.F32, fill: uniformFill(2, 1) },
    { name: 'c', ne: [32], type: GgmlType.Q8_0, fill: uniformFill(3, 1) },
  ]);
  t.is(fs.statSync(file).size, size);
  t.is(describeGgufProblem(file), undefined);
  const { readGgufFileInfo } = await import('node-llama-cpp');
  const info = await readGgufFileInfo(file, { readTensorInfo: true });
  t.is(info.version, 3);
  t.is(info.metadata.general.architecture, 'llama');
  t.deepEqual(info.fullTensorInfo.map((x) => [x.name, x.dimensions.map(Number), x.ggmlType]), [['a', [64, 2], 2], ['b', [3], 0], ['c', [32], 8]]);
  const m = makeModels(path.join(tmp.dir, 'm'));
  t.is(describeGgufProblem(m.model), undefined);
  t.is(describeGgufProblem(m.mmproj), undefined);
  const mi = await readGgufFileInfo(m.mmproj);
  t.is(mi.metadata.clip.projector_type, 'mlp');
  const trunc = path.join(tmp.dir, 'trunc.gguf');
  fs.writeFileSync(trunc, fs.readFileSync(m.model).subarray(0, 100_000));
  t.regex(describeGgufProblem(trunc), /truncated/);
  fs.writeFileSync(trunc, fs.readFileSync(m.model).subarray(0, 1000));
  t.regex(describeGgufProblem(trunc), /header is corrupt or truncated/);
  fs.writeFileSync(trunc, 'GGML nonsense');
  t.regex(describeGgufProblem(trunc), /not a GGUF/);
});

test('factory: fixed strings, then sidecar files, then the generator behind a cache', async (t) => {
  const none = await createCaptionerFromOptions({});
  t.deepEqual(await captionXpsr(none, 'x.png'), { high: '', low: '' });
  const fixed = await createCaptionerFromOptions({ promptHigh: 'H', promptLow: 'L' });
  t.deepEqual(await captionXpsr(fixed, 'x.png'), { high: 'H', low: 'L' });
  const root = path.join(tmp.dir, 'ds2');
  const img = writeTestPng(path.join(root, 'LR', 'im.png'));
  fs.mkdirSync(path.join(root, 'highlevel_prompt'), { recursive: true });
  fs.writeFileSync(path.join(root, 'highlevel_prompt', 'im.txt'), 'from file');
  const side = await createCaptionerFromOptions({ captioner: 'sidecar', promptDir: root, sidecarMissing: 'empty', promptLow: 'low!' });
  t.deepEqual(await captionXpsr(side, img), { high: 'from file', low: 'low!' });
  const http = await createCaptionerFromOptions({ captionUrl: 'http://127.0.0.1:9/v1', captionCache: false });
  t.is(http.kind, 'http');
  const cached = await createCaptionerFromOptions({ captionUrl: 'http://127.0.0.1:9' });
  t.is(cached.kind, 'cache');
  t.is((await t.throwsAsync(createCaptionerFromOptions({ captioner: 'llava', llavaModel: 'm.gguf' }))).code, 'ERR_MMPROJ_MISSING');
  t.is((await t.throwsAsync(createCaptionerFromOptions({ captioner: 'llava', llavaMmproj: 'p.gguf' }))).code, 'ERR_MODEL_MISSING');
  t.is((await t.throwsAsync(createCaptionerFromOptions({ captioner: 'http' }))).code, 'ERR_INVALID_ARGUMENT');
  t.is((await t.throwsAsync(createCaptionerFromOptions({ captioner: 'bogus' }))).code, 'ERR_INVALID_ARGUMENT');
  t.deepEqual(await captionXpsr(fixed, 'x.png', { instructions: { high: 'custom' } }), { high: 'H', low: 'L' });
  t.is(typeof api.LlavaCaptioner.create, 'function');
  t.is(typeof api.runCaptionCommand, 'function');
});

test('xpsr caption: help, usage errors, fixed captions to stdout, JSON lines and files', async (t) => {
  const out = [];
  const err = [];
  const io = { stdout: { write: (s) => out.push(s) }, stderr: { write: (s) => err.push(s) } };
  t.is(await runCaptionCommand(['--help'], io), 0);
  t.is(out.join(''), CAPTION_HELP);
  t.regex(CAPTION_HELP, /--llava-mmproj/);
  t.is(await runCaptionCommand([], io), 2);
  t.is(await runCaptionCommand(['--bogus', 'x.png'], io), 2);
  t.is(await runCaptionCommand(['--caption-max-tokens', 'lots', 'x.png'], io), 2);
  t.is(await runCaptionCommand(['--captioner', 'fixed', 'x.png'], io), 2);
  t.is(await runCaptionCommand(['--captioner', 'nope', 'x.png'], io), 2);
  t.is(await runCaptionCommand(['--llava-model', path.join(tmp.dir, 'missing.gguf'), '--llava-mmproj', 'p.gguf', 'x.png'], io), 2);
  t.regex(err.join(''), /not found/);
  const dir = path.join(tmp.dir, 'cli');
  writeTestPng(path.join(dir, 'one.png'), 1);
  writeTestPng(path.join(dir, 'two.png'), 2);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image');
  out.length = 0;
  t.is(await runCaptionCommand(['--prompt-high', 'a cat', '--prompt-low', 'sharp', '-q', dir], io), 0);
  t.is(out.join(''), `${path.join(dir, 'one.png')}\n  high: a cat\n  low: sharp\n${path.join(dir, 'two.png')}\n  high: a cat\n  low: sharp\n`);
  out.length = 0;
  t.is(await runCaptionCommand(['--captioner', 'fixed', '--prompt-high', 'h', '--prompt-low', 'l', '--jsonl', '-q',
    path.join(dir, 'one.png'), path.join(dir, 'missing.png')], io), 0);
  const lines = out.join('').trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(lines[0], { image: path.join(dir, 'one.png'), name: 'one', high: 'h', low: 'l', ms: lines[0].ms });
  t.is(lines.length, 2);
  const dest = path.join(tmp.dir, 'out');
  t.is(await runCaptionCommand(['--prompt-high', 'H', '--prompt-low', 'L', '--out', dest, '-q', dir], io), 0);
  t.is(fs.readFileSync(path.join(dest, 'highlevel_prompt', 'two.txt'), 'utf8'), 'H');
  t.is(fs.readFileSync(path.join(dest, 'lowlevel_prompt_q', 'one.txt'), 'utf8'), 'L');
  // sidecar captioner reading what was just written
  out.length = 0;
  t.is(await runCaptionCommand(['--prompt-dir', dest, '-q', path.join(dir, 'one.png')], io), 0);
  t.regex(out.join(''), /high: H\n {2}low: L/);
  err.length = 0;
  t.is(await runCaptionCommand(['--captioner', 'sidecar', '--prompt-dir', path.join(tmp.dir, 'empty'), '-q', path.join(dir, 'one.png')], io), 1);
  t.regex(err.join(''), /caption file not found.*ERR_CAPTION_MISSING/);
  const ctl = new AbortController();
  ctl.abort();
  t.is(await runCaptionCommand(['--prompt-high', 'H', '-q', dir], { ...io, signal: ctl.signal }), 130);
});
