// Captioning pieces that need no native code: instructions and post-processing, fixed and sidecar
// captioners, the cache, the factory, one captioner per caption, image decoding through lib/image, the
// test-only GGUF writer, and `xpsr caption` with fixed/sidecar captions (in-process and as a process).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { CaptionCache, CachingCaptioner } from '../dist/lib/captioners/cache.js';
import { captionXpsr, createCaptionerFromOptions } from '../dist/lib/captioners/factory.js';
import { FixedCaptioner, SidecarCaptioner } from '../dist/lib/captioners/fixed.js';
import { describeGgufProblem } from '../dist/lib/captioners/gguf-check.js';
import { CaptionPixels, imageFile, prepareImage } from '../dist/lib/captioners/image.js';
import {
  firstLineLeftStripped,
  LLAVA15_PROMPT_TEMPLATE,
  postprocessCaption,
  splitPromptTemplate,
  XPSR_INSTRUCTIONS,
} from '../dist/lib/captioners/instructions.js';
import { HighLowCaptioner } from '../dist/lib/captioners/pair.js';
import { CAPTION_HELP, runCaptionCommand } from '../dist/lib/cli/caption.js';
import { XpsrError } from '../dist/lib/errors.js';
import * as api from '../dist/lib/index.js';
import { encodePngRgb, HIGH, LOW, makeModels, tempDir, testRgb, writeTestPng } from './helpers/gguf-captioner.mjs';
import { floatToHalf, GgmlType, gguf, tensorByteSize, uniformFill, writeGguf } from './helpers/gguf-writer.mjs';

const tmp = tempDir('xpsr-capmisc-');
test.after.always(() => tmp.cleanup());

class CountingCaptioner {
  kind = 'count';
  cacheable = true;
  calls = [];
  images = [];
  constructor(id = 'count:1', prefix = 'answer to') {
    this.id = id;
    this.prefix = prefix;
  }
  async caption(image, instructions) {
    this.calls.push(instructions);
    this.images.push(image);
    return instructions.map((s) => `${this.prefix} ${s}`);
  }
  async dispose() {
    this.disposed = (this.disposed ?? 0) + 1;
  }
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
  t.true(e instanceof XpsrError);
  t.is(e.code, 'ERR_CAPTION_MISSING');
  await g.dispose();
  t.is(inner.disposed, 1);
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
  t.deepEqual(await new SidecarCaptioner({ root }).caption(new Uint8Array(fs.readFileSync(lr)), [HIGH, LOW], { name: '0001' }), [
    'A red car on a street.',
    '',
  ]);
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

test('images are decoded by lib/image: path, bytes and pixels of one picture are one image; bad inputs are coded', async (t) => {
  const rgb = testRgb(5, 3);
  const png = encodePngRgb(rgb.data, 5, 3);
  const file = path.join(tmp.dir, 'img', 'five.png');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, png);
  const fromPath = await prepareImage(file);
  const fromBytes = await prepareImage(png);
  const fromRaw = await prepareImage(rgb);
  for (const p of [fromPath, fromBytes, fromRaw]) {
    t.true(p instanceof CaptionPixels);
    t.deepEqual([p.width, p.height, p.channels], [5, 3, 3]);
    t.deepEqual(new Uint8Array(p.data), rgb.data);
  }
  t.is(fromPath.source.name, 'five');
  t.is(fromPath.source.format, 'png');
  t.is(fromPath.contentHash(), fromBytes.contentHash());
  t.is(fromPath.contentHash(), fromRaw.contentHash());
  t.is(await prepareImage(fromPath), fromPath, 'decoded once');
  t.not((await prepareImage(testRgb(5, 3, 1))).contentHash(), fromPath.contentHash());
  // RGBA and grey pixels become RGB
  const rgba = new Uint8Array(15 * 4);
  for (let i = 0; i < 15; i++) rgba.set([...rgb.data.subarray(i * 3, i * 3 + 3), 9], i * 4);
  t.is((await prepareImage({ data: rgba, width: 5, height: 3, channels: 4 })).contentHash(), fromPath.contentHash());
  // the file sent to servers: original bytes when servers read the format, else PNG
  t.deepEqual(await imageFile(fromBytes), { bytes: png, mime: 'image/png' });
  t.deepEqual((await imageFile(fromPath)).bytes, png);
  const { default: sharp } = await import('sharp');
  const tiff = new Uint8Array(
    await sharp(Buffer.from(rgb.data), { raw: { width: 5, height: 3, channels: 3 } })
      .tiff({ compression: 'lzw' })
      .toBuffer(),
  );
  const sent = await imageFile(await prepareImage(tiff));
  t.is(sent.mime, 'image/png');
  t.deepEqual(new Uint8Array(await sharp(Buffer.from(sent.bytes)).raw().toBuffer()), rgb.data);
  t.is((await imageFile(fromRaw)).mime, 'image/png');
  // bad inputs: the library's image codes
  const code = async (x) => (await t.throwsAsync(prepareImage(x))).code;
  t.is(await code(42), 'ERR_INVALID_ARGUMENT');
  t.is(await code({ data: new Uint8Array(5), width: 4, height: 4 }), 'ERR_INVALID_ARGUMENT');
  t.is(await code(new Uint8Array(0)), 'ERR_IMAGE_EMPTY');
  t.is(await code(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])), 'ERR_IMAGE_UNREADABLE');
  t.is(await code(path.join(tmp.dir, 'img', 'missing.png')), 'ERR_IMAGE_UNREADABLE');
  const empty = path.join(tmp.dir, 'img', 'empty.png');
  fs.writeFileSync(empty, '');
  t.is(await code(empty), 'ERR_IMAGE_EMPTY');
  t.is(await code(png.subarray(0, 40)), 'ERR_IMAGE_UNREADABLE');
});

test('GGUF writer: layout readable by node-llama-cpp, f16 conversion, quantized sizes; problems are described', async (t) => {
  t.is(floatToHalf(1), 0x3c00);
  t.is(floatToHalf(-2), 0xc000);
  t.is(floatToHalf(65504), 0x7bff);
  t.is(floatToHalf(1e6), 0x7c00);
  t.is(floatToHalf(5.960464477539063e-8), 0x0001);
  t.is(floatToHalf(0), 0);
  t.is(tensorByteSize(GgmlType.Q4_0, [64, 3]), 6 * 18);
  t.is(tensorByteSize(GgmlType.F16, [3, 5]), 30);
  t.is(tensorByteSize(GgmlType.Q8_0, [32, 2]), 2 * 34);
  t.throws(() => tensorByteSize(GgmlType.Q4_0, [48, 1]));
  const file = path.join(tmp.dir, 'w.gguf');
  const size = writeGguf(
    file,
    {
      'general.architecture': gguf.str('llama'),
      'x.u32': gguf.u32(7),
      'x.arr': gguf.arr(8, ['a', 'bc']),
    },
    [
      { name: 'a', ne: [64, 2], type: GgmlType.Q4_0, fill: uniformFill(1, 1) },
      { name: 'b', ne: [3], type: GgmlType.F32, fill: uniformFill(2, 1) },
      { name: 'c', ne: [32], type: GgmlType.Q8_0, fill: uniformFill(3, 1) },
    ],
  );
  t.is(fs.statSync(file).size, size);
  t.is(describeGgufProblem(file), undefined);
  const { readGgufFileInfo } = await import('node-llama-cpp');
  const info = await readGgufFileInfo(file, { readTensorInfo: true });
  t.is(info.version, 3);
  t.is(info.metadata.general.architecture, 'llama');
  t.deepEqual(
    info.fullTensorInfo.map((x) => [x.name, x.dimensions.map(Number), x.ggmlType]),
    [
      ['a', [64, 2], 2],
      ['b', [3], 0],
      ['c', [32], 8],
    ],
  );
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
  const root = path.join(tmp.dir, 'ds2');
  const img = writeTestPng(path.join(root, 'LR', 'im.png'));
  const none = await createCaptionerFromOptions({});
  t.deepEqual(await captionXpsr(none, img), { high: '', low: '' });
  const fixed = await createCaptionerFromOptions({ promptHigh: 'H', promptLow: 'L' });
  t.is(fixed.kind, 'pair');
  t.deepEqual(await captionXpsr(fixed, img), { high: 'H', low: 'L' });
  fs.mkdirSync(path.join(root, 'highlevel_prompt'), { recursive: true });
  fs.writeFileSync(path.join(root, 'highlevel_prompt', 'im.txt'), 'from file');
  const side = await createCaptionerFromOptions({ captioner: 'sidecar', promptDir: root, sidecarMissing: 'empty', promptLow: 'low!' });
  t.deepEqual(await captionXpsr(side, img), { high: 'from file', low: 'low!' });
  const http = await createCaptionerFromOptions({ captionUrl: 'http://127.0.0.1:9/v1', captionCache: false });
  t.is(http.kind, 'http');
  const cached = await createCaptionerFromOptions({ captionUrl: 'http://127.0.0.1:9' });
  t.is(cached.kind, 'cache');
  const option = async (o) => {
    const e = await t.throwsAsync(createCaptionerFromOptions(o));
    t.is(e.code, 'ERR_INVALID_OPTION', e.message);
    return e.details.option;
  };
  t.is(await option({ captioner: 'llava', llavaModel: 'm.gguf' }), '--llava-mmproj');
  t.is(await option({ captioner: 'llava', llavaMmproj: 'p.gguf' }), '--llava-model');
  t.is(await option({ captionUrl: 'http://127.0.0.1:9', llavaLowModel: 'low.gguf' }), '--llava-low-mmproj');
  t.is(await option({ captioner: 'http' }), '--caption-url');
  t.is(await option({ captioner: 'bogus' }), 'captioner');
  t.is(await option({ captionUrl: 'ftp://x' }), 'url');
  const missing = await t.throwsAsync(createCaptionerFromOptions({ llavaModel: path.join(tmp.dir, 'nope.gguf'), llavaMmproj: 'p.gguf' }));
  t.is(missing.code, 'ERR_WEIGHTS_MISSING');
  t.deepEqual(missing.details, { file: path.join(tmp.dir, 'nope.gguf'), role: 'model' });
  t.deepEqual(await captionXpsr(fixed, img, { instructions: { high: 'custom' } }), { high: 'H', low: 'L' });
  t.is((await t.throwsAsync(captionXpsr({ high: fixed }, img))).code, 'ERR_INVALID_OPTION');
  const short = { kind: 'short', id: 'short', cacheable: false, caption: async () => ['only one'], dispose: async () => {} };
  t.is((await t.throwsAsync(captionXpsr(short, img))).code, 'ERR_INVALID_OPTION');
});

test('the public exports: captioners, one error type, no test generators, no CLI internals', (t) => {
  t.is(typeof api.LlavaCaptioner.create, 'function');
  t.is(typeof api.HighLowCaptioner, 'function');
  t.is(typeof api.captionXpsr, 'function');
  t.is(api.XpsrError, XpsrError);
  for (const gone of ['CaptionError', 'createRandomLlava', 'writeGguf', 'runCaptionCommand', 'CAPTIONER_CLI_OPTIONS', 'captionerAddonDir']) {
    t.false(gone in api, gone);
  }
  const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  t.false(
    pkg.files.some((f) => f === 'test' || f.startsWith('test/helpers')),
    'test helpers are not shipped',
  );
  t.false(fs.existsSync(new URL('../lib/captioners/gguf-writer.ts', import.meta.url)));
  t.false(fs.existsSync(new URL('../lib/captioners/random-llava.ts', import.meta.url)));
});

test('one captioner per caption: high answers the high-level instruction, low the low-level one', async (t) => {
  const a = new CountingCaptioner('model:a', 'A says');
  const b = new CountingCaptioner('model:b', 'B says');
  const img = writeTestPng(path.join(tmp.dir, 'pair', 'p.png'), 3);
  t.deepEqual(await captionXpsr({ high: a, low: b }, img), { high: `A says ${HIGH}`, low: `B says ${LOW}` });
  t.deepEqual(a.calls, [[HIGH]]);
  t.deepEqual(b.calls, [[LOW]]);
  t.true(a.images[0] instanceof CaptionPixels, 'decoded once, shared by both');
  t.is(a.images[0], b.images[0]);
  // the same captioner twice: one call answers both
  t.deepEqual(await captionXpsr({ high: a, low: a }, img), { high: `A says ${HIGH}`, low: `A says ${LOW}` });
  t.deepEqual(a.calls.at(-1), [HIGH, LOW]);
  t.is(a.calls.length, 2);
  // as a Captioner: instruction 1 goes to low, all others to high; dispose disposes each once
  const pair = new HighLowCaptioner({ high: a, low: b });
  t.is(pair.id, 'pair:model:a|model:b');
  t.deepEqual(await pair.caption(img, ['x', 'y', 'z']), ['A says x', 'B says y', 'A says z']);
  t.deepEqual(await pair.caption(img, ['only']), ['A says only']);
  await pair.dispose();
  t.is(a.disposed, 1);
  t.is(b.disposed, 1);
  await new HighLowCaptioner({ high: a, low: a }).dispose();
  t.is(a.disposed, 2);
  // a missing image is an error even for captioners that would not look at it
  const e = await t.throwsAsync(captionXpsr({ high: a, low: b }, path.join(tmp.dir, 'pair', 'missing.png')));
  t.is(e.code, 'ERR_IMAGE_UNREADABLE');
});

test('factory: a separate low-level source gives each caption its own chain (fixed, sidecar, generator)', async (t) => {
  const root = path.join(tmp.dir, 'ds3');
  const img = writeTestPng(path.join(root, 'LR', 'im.png'));
  fs.mkdirSync(path.join(root, 'lowlevel_prompt_q'), { recursive: true });
  fs.writeFileSync(path.join(root, 'lowlevel_prompt_q', 'im.txt'), 'low from file');
  // low-level model flags without a high-level generator are a usage error naming the flag
  t.is(
    (await t.throwsAsync(createCaptionerFromOptions({ promptHigh: 'H', llavaLowModel: 'q.gguf', llavaLowMmproj: 'qp.gguf' }))).details.option,
    '--llava-mmproj',
  );
  // a missing model file names its role
  const missing = path.join(tmp.dir, 'absent.gguf');
  const e = await t.throwsAsync(createCaptionerFromOptions({ llavaModel: missing, llavaMmproj: missing, llavaLowModel: missing }));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.is(e.details.role, 'model');
  const side = await createCaptionerFromOptions({ captioner: 'sidecar', promptDir: root, sidecarMissing: 'empty', promptHigh: 'fixed high' });
  t.deepEqual(await captionXpsr(side, img), { high: 'fixed high', low: 'low from file' });
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
  t.regex(err.join(''), /not found.*\[ERR_WEIGHTS_MISSING\]/);
  // no captioner configured, or only half of one: a usage error, before any image is read
  err.length = 0;
  t.is(await runCaptionCommand(['x.png'], io), 2);
  t.regex(err.join(''), /no captioner configured.*\[ERR_INVALID_OPTION\]/);
  err.length = 0;
  t.is(await runCaptionCommand(['--prompt-high', 'h', 'x.png'], io), 2);
  t.regex(err.join(''), /no captioner for the low-level caption.*--prompt-low.*\[ERR_INVALID_OPTION\]/);
  const dir = path.join(tmp.dir, 'cli');
  writeTestPng(path.join(dir, 'one.png'), 1);
  writeTestPng(path.join(dir, 'two.png'), 2);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image');
  out.length = 0;
  t.is(await runCaptionCommand(['--prompt-high', 'a cat', '--prompt-low', 'sharp', '-q', dir], io), 0);
  t.is(out.join(''), `${path.join(dir, 'one.png')}\n  high: a cat\n  low: sharp\n${path.join(dir, 'two.png')}\n  high: a cat\n  low: sharp\n`);
  // a missing or empty image fails that image (exit 1), even with fixed captions; the others are captioned
  out.length = 0;
  err.length = 0;
  const empty = path.join(tmp.dir, 'empty.png');
  fs.writeFileSync(empty, '');
  t.is(
    await runCaptionCommand(
      [
        '--captioner',
        'fixed',
        '--prompt-high',
        'h',
        '--prompt-low',
        'l',
        '--jsonl',
        '-q',
        path.join(dir, 'one.png'),
        path.join(dir, 'missing.png'),
        empty,
      ],
      io,
    ),
    1,
  );
  const lines = out
    .join('')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.deepEqual(lines[0], { image: path.join(dir, 'one.png'), name: 'one', high: 'h', low: 'l', ms: lines[0].ms });
  t.is(lines.length, 3);
  t.is(lines[1].code, 'ERR_IMAGE_UNREADABLE');
  t.is(lines[2].code, 'ERR_IMAGE_EMPTY');
  t.regex(err.join(''), /missing\.png: .*\[ERR_IMAGE_UNREADABLE\]/);
  t.regex(err.join(''), /empty\.png: .*empty.*\[ERR_IMAGE_EMPTY\]/);
  // a folder without images, --out naming a file: usage errors
  fs.mkdirSync(path.join(tmp.dir, 'no-images'), { recursive: true });
  t.is(await runCaptionCommand(['--prompt-high', 'h', '--prompt-low', 'l', path.join(tmp.dir, 'no-images')], io), 2);
  t.is(await runCaptionCommand(['--prompt-high', 'h', '--prompt-low', 'l', '--out', empty, dir], io), 2);
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
  t.is(await runCaptionCommand(['--prompt-high', 'H', '--prompt-low', 'L', '-q', dir], { ...io, signal: ctl.signal }), 130);
});

test('xpsr caption as a process: coded messages and exit statuses 2 (usage), 1 (image failed), 0', (t) => {
  const bin = new URL('../dist/lib/cli/main.js', import.meta.url).pathname;
  const run = (args) => spawnSync(process.execPath, [bin, 'caption', ...args], { encoding: 'utf8', timeout: 60_000 });
  const dir = path.join(tmp.dir, 'proc');
  const one = writeTestPng(path.join(dir, 'one.png'), 1);
  const empty = path.join(dir, 'empty.png');
  fs.writeFileSync(empty, '');
  let r = run([one]);
  t.is(r.status, 2, r.stderr);
  t.regex(r.stderr, /^xpsr caption: no captioner configured.*\[ERR_INVALID_OPTION\]/);
  t.is(r.stdout, '');
  r = run(['--prompt-high', 'h', '--prompt-low', 'l', '-q', path.join(dir, 'missing.png')]);
  t.is(r.status, 1, r.stderr);
  t.regex(r.stderr, /missing\.png: .*file not found \[ERR_IMAGE_UNREADABLE\]/);
  r = run(['--prompt-high', 'h', '--prompt-low', 'l', '-q', empty]);
  t.is(r.status, 1, r.stderr);
  t.regex(r.stderr, /\[ERR_IMAGE_EMPTY\]/);
  r = run(['--prompt-high', 'h', '--prompt-low', 'l', '-q', one]);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, `${one}\n  high: h\n  low: l\n`);
});
