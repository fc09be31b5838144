// The `xpsr` command as users run it: upscale (files, folders, JSON lines, errors), demo, doctor, parity.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { root, fixtures, model } from './helpers/fixtures.mjs';
import { readImageMetadata } from '../dist/lib/index.js';

const bin = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const xpsr = (args, opts = {}) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 300_000, ...opts });
const tmp = () => mkdtempSync(path.join(tmpdir(), 'xpsr-cli-'));
const img = (n) => path.join(fixtures, 'images', n);
const quick = ['--model', model, '--device', 'cpu', '--steps', '2', '--process-size', '64', '--seed', '3'];

test('upscale a file to a file and a folder to a folder', async (t) => {
  const dir = tmp();
  const out = path.join(dir, 'one.jpg');
  let r = xpsr(['upscale', img('coffee_32x24.png'), '-o', out, ...quick, '--prompt-high', 'a cup of coffee', '-q']);
  t.is(r.status, 0, r.stderr);
  const meta = await sharp(out).metadata();
  t.is(meta.format, 'jpeg');
  t.is(meta.width, 128);
  const folder = path.join(dir, 'many');
  r = xpsr(['upscale', path.join(fixtures, 'images'), '-o', folder, ...quick, '--format', 'webp', '-q']);
  t.is(r.status, 0, r.stderr);
  for (const n of ['coffee_32x24', 'noise_32x24', 'rocket_75x100']) t.true(existsSync(path.join(folder, `${n}.webp`)), n);
});

test('--json writes parseable JSON lines with progress and results', (t) => {
  const dir = tmp();
  const r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(dir, 'a.png'), ...quick, '--json', '--prompt-low', 'noisy']);
  t.is(r.status, 0, r.stderr);
  const events = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.true(events.some((e) => e.event === 'progress' && e.stage === 'denoise' && e.step === 2));
  const done = events.find((e) => e.event === 'done');
  t.is(done.width, 128);
  t.is(done.seed, 3);
  t.is(done.prompts.low, 'noisy');
});

test('sidecar prompt files in the official layout are used', (t) => {
  const dir = tmp();
  for (const [sub, text] of [
    ['highlevel_prompt', '  a coffee cup on a table\nsecond line'],
    ['lowlevel_prompt_q', 'slightly blurry'],
  ]) {
    cpSync(img('coffee_32x24.png'), path.join(dir, 'coffee_32x24.png'));
    const d = path.join(dir, sub);
    spawnSync('mkdir', ['-p', d]);
    writeFileSync(path.join(d, 'coffee_32x24.txt'), text);
  }
  const r = xpsr(['upscale', path.join(dir, 'coffee_32x24.png'), '-o', path.join(dir, 'o.png'), ...quick, '--prompt-dir', dir, '--json']);
  t.is(r.status, 0, r.stderr);
  const done = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .find((e) => e.event === 'done');
  t.deepEqual(done.prompts, { high: 'a coffee cup on a table', low: 'slightly blurry' });
});

test('a missing sidecar caption file is a clear error for that image', (t) => {
  const dir = tmp();
  const r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(dir, 'o.png'), ...quick, '--prompt-dir', dir, '--captioner', 'sidecar', '-q']);
  t.is(r.status, 1);
  t.regex(r.stderr, /caption file not found: .*highlevel_prompt\/coffee_32x24\.txt/);
});

test('a bad image fails that image (exit 1) but the others are written', (t) => {
  const dir = tmp();
  const bad = path.join(dir, 'bad.png');
  writeFileSync(bad, 'not a png');
  const r = xpsr(['upscale', bad, img('coffee_32x24.png'), '-o', path.join(dir, 'out'), ...quick, '-q']);
  t.is(r.status, 1);
  t.regex(r.stderr, /bad\.png.*ERR_IMAGE_UNREADABLE/);
  t.true(existsSync(path.join(dir, 'out', 'coffee_32x24.png')));
});

test('usage errors exit 2 and name the flag: missing -o, invalid option value, unknown command', (t) => {
  let r = xpsr(['upscale', img('coffee_32x24.png'), '--model', model]);
  t.is(r.status, 2);
  t.regex(r.stderr, /-o/);
  r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(tmp(), 'x.png'), ...quick, '--steps', '0']);
  t.is(r.status, 2);
  t.regex(r.stderr, /Invalid value for --steps: expected an integer between 1 and 1000/);
  t.notRegex(r.stderr, /'steps'|loading models/);
  r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(tmp(), 'x.png'), ...quick, '--process-size', '10']);
  t.regex(r.stderr, /--process-size/);
  t.notRegex(r.stderr, /processSize/);
  r = xpsr(['frobnicate']);
  t.is(r.status, 2);
  r = xpsr([]);
  t.is(r.status, 2);
});

test('stdin to stdout with -, and stdin into a folder', async (t) => {
  const png = readFileSync(img('coffee_32x24.png'));
  let r = spawnSync(process.execPath, [bin, 'upscale', '-', '-o', '-', ...quick, '--format', 'jpg'], { input: png, maxBuffer: 1 << 26 });
  t.is(r.status, 0, r.stderr.toString());
  const meta = await sharp(r.stdout).metadata();
  t.is(meta.format, 'jpeg');
  t.is(meta.width, 128);
  t.is((await readImageMetadata(r.stdout)).seed, '3');
  t.notRegex(r.stderr.toString(), /\r/);
  const dir = tmp();
  r = spawnSync(process.execPath, [bin, 'upscale', '-', '-o', dir, ...quick, '-q'], { input: png });
  t.is(r.status, 0, r.stderr.toString());
  t.deepEqual(readdirSync(dir), ['stdin.png']);
  r = spawnSync(process.execPath, [bin, 'upscale', '-', '-o', '-', ...quick], { input: Buffer.alloc(0) });
  t.is(r.status, 1);
  t.regex(r.stderr.toString(), /\[ERR_IMAGE_EMPTY\]/);
});

test('seed, prompts, model, device and settings are embedded in the output (XMP), unless --no-metadata', async (t) => {
  const dir = tmp();
  const args = [
    'upscale',
    img('coffee_32x24.png'),
    ...quick,
    '--prompt-high',
    'a cup of coffee',
    '--prompt-low',
    'noisy',
    '--negative-prompt',
    'ugly',
    '--added-prompt',
    'sharp',
    '--added-noise-level',
    '700',
    '-q',
  ];
  for (const f of ['m.png', 'm.jpg', 'm.webp']) {
    const r = xpsr([...args, '-o', path.join(dir, f)]);
    t.is(r.status, 0, r.stderr);
    const m = await readImageMetadata(path.join(dir, f));
    t.like(
      m,
      {
        seed: '3',
        'prompt-high': 'a cup of coffee',
        'prompt-low': 'noisy',
        'negative-prompt': 'ugly',
        'added-prompt': 'sharp',
        model: 'model',
        device: 'cpu',
        steps: '2',
        scheduler: 'ddpm',
        scale: '4',
      },
      f,
    );
  }
  const r = xpsr([...args, '-o', path.join(dir, 'plain.png'), '--no-metadata']);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(await readImageMetadata(path.join(dir, 'plain.png')), {});
});

test('--negative-prompt, --added-prompt and --added-noise-level change the result', (t) => {
  const dir = tmp();
  const run = (name, extra) => {
    const r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(dir, name), ...quick, '--no-metadata', '-q', ...extra]);
    t.is(r.status, 0, r.stderr);
    return readFileSync(path.join(dir, name));
  };
  const base = run('base.png', []);
  t.true(base.equals(run('again.png', [])), 'deterministic');
  for (const [name, extra] of [
    ['neg.png', ['--negative-prompt', 'a dog']],
    ['add.png', ['--added-prompt', 'a painting']],
    ['lvl.png', ['--added-noise-level', '500']],
  ])
    t.false(base.equals(run(name, extra)), name);
});

test('plain progress lines when stderr is not a terminal; a summary; skipped outputs are reported, not counted as written', (t) => {
  const dir = tmp();
  const out = path.join(dir, 'a.png');
  let r = xpsr(['upscale', img('coffee_32x24.png'), '-o', out, ...quick]);
  t.is(r.status, 0, r.stderr);
  t.notRegex(r.stderr, /\r/);
  t.regex(r.stderr, /^xpsr: \[1\/1\] .*coffee_32x24\.png: denoise 2\/2 \(\d+\.\d s\)$/m);
  t.regex(r.stderr, /^xpsr: 1 written, 0 skipped, 0 failed$/m);
  const before = statSync(out).mtimeMs;
  r = xpsr(['upscale', img('coffee_32x24.png'), '-o', out, ...quick, '--json']);
  t.is(r.status, 0, r.stderr);
  const events = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.like(
    events.find((e) => e.event === 'skipped'),
    { output: out, reason: 'output exists' },
  );
  t.like(
    events.find((e) => e.event === 'summary'),
    { written: 0, skipped: 1, failed: 0, cancelled: false, device: 'cpu' },
  );
  t.is(events.find((e) => e.event === 'loaded').device, 'cpu');
  t.is(statSync(out).mtimeMs, before, 'the existing output was not touched');
  r = xpsr(['upscale', img('coffee_32x24.png'), '-o', out, ...quick]);
  t.regex(r.stderr, /skipped, .*a\.png exists \(--overwrite replaces it\)/);
  t.regex(r.stderr, /^xpsr: 0 written, 1 skipped, 0 failed$/m);
});

test('"image too large" advice is given in flags, with a value the validator accepts', async (t) => {
  const dir = tmp();
  let r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(dir, 'a.png'), ...quick, '--max-input-pixels', '100']);
  t.is(r.status, 1);
  t.regex(r.stderr, /more than --max-input-pixels \(100\); raise --max-input-pixels to at least 1000000 to process it \[ERR_IMAGE_TOO_LARGE\]/);
  t.notRegex(r.stderr, /maxInputPixels/);
  const strip = path.join(dir, 'strip.png');
  await sharp({ create: { width: 200, height: 2, channels: 3, background: 'gray' } })
    .png()
    .toFile(strip);
  r = xpsr(['upscale', strip, '-o', path.join(dir, 'b.png'), ...quick]);
  t.is(r.status, 1);
  t.regex(r.stderr, /aspect ratio of 100:1, more than --max-aspect-ratio \(16\).*(raise --max-aspect-ratio to at least 100|crop it)/i);
  t.notRegex(r.stderr, /maxAspectRatio/);
  t.deepEqual(readdirSync(dir).sort(), ['strip.png']);
});

test('--help lists every API option as a flag', (t) => {
  const r = xpsr(['upscale', '--help']);
  t.is(r.status, 0);
  for (const flag of [
    '--scale',
    '--process-size',
    '--steps',
    '--guidance',
    '--conditioning-scale',
    '--seed',
    '--scheduler',
    '--color-fix',
    '--init',
    '--added-noise-level',
    '--added-prompt',
    '--negative-prompt',
    '--long-prompts',
    '--low-level-guidance',
    '--tiling',
    '--tile-size',
    '--tile-overlap',
    '--tile-max-pixels',
    '--memory-budget-mb',
    '--vae-tiling',
    '--max-input-pixels',
    '--max-aspect-ratio',
    '--prompt-high',
    '--prompt-low',
    '--instruction-high',
    '--instruction-low',
    '--device',
    '--threads',
    '--sd',
    '--xpsr',
    '--model',
  ])
    t.regex(r.stdout, new RegExp(`${flag}\\b`), flag);
  t.regex(r.stdout, /Exit status: 0 .* 1 .* 2 usage error .* 130 interrupted/s);
  t.notRegex(r.stdout, /\.bmp/);
});

test('demo runs the whole pipeline and says it is an installation check', (t) => {
  const out = path.join(tmp(), 'demo.png');
  const r = xpsr(['demo', '-o', out, '--device', 'cpu', '--steps', '2']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /INSTALLATION CHECK ONLY/);
  t.regex(r.stdout, /NOT a real restoration/);
  t.true(existsSync(out));
});

test('doctor: build, CUDA architectures, the device a run would use, env variables, partial weights', (t) => {
  let r = xpsr(['doctor']);
  t.is(r.status, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /^build: compiler \S.*, glibc \S/m);
  t.regex(r.stdout, /^CUDA architectures: (none \(built without CUDA\)|unknown|sm_\d+.*)$/m);
  t.regex(r.stdout, /^device: auto -> (cpu|cuda:0) \(/m);
  r = xpsr(['doctor', '--device', 'cpu']);
  t.regex(r.stdout, /^device: cpu -> cpu \(CPU/m);
  // weights from the environment, as for xpsr upscale
  r = xpsr(['doctor'], { env: { ...process.env, XPSR_MODEL: model } });
  t.is(r.status, 0, r.stdout);
  t.regex(r.stdout, /environment: .*XPSR_MODEL=/);
  t.regex(r.stdout, /OK {3}unet +650 tensors/);
  // the SD folder alone: its components are checked, the XPSR ones are said to be not checked
  r = xpsr(['doctor', '--sd', model]);
  t.is(r.status, 0, r.stdout);
  t.notRegex(r.stdout, /undefined/);
  t.regex(r.stdout, /OK {3}vae /);
  t.regex(r.stdout, /OK {3}scheduler /);
  r = xpsr(['doctor', '--sd', tmp()]);
  t.is(r.status, 1);
  t.notRegex(r.stdout, /undefined/);
  t.regex(r.stdout, /FAIL .*\n.*text_encoder\/ \(looked in /);
  t.regex(r.stdout, /-- {3}unet, controlnet not checked \(give --xpsr\)/);
  r = xpsr(['doctor', '--sd', '/nonexistent/sd']);
  t.regex(r.stdout, /FAIL --sd folder not found: \/nonexistent\/sd/);
});

test('doctor reports the build and checks weights tensor by tensor', (t) => {
  let r = xpsr(['doctor', '--model', model]);
  t.is(r.status, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /backends built: cpu/);
  t.regex(r.stdout, /OK {3}unet +650 tensors/);
  const broken = tmp();
  cpSync(model, broken, { recursive: true });
  const cfg = path.join(broken, 'controlnet', 'config.json');
  const c = JSON.parse(readFileSync(cfg, 'utf8'));
  c.block_out_channels = [16, 32, 64, 32];
  writeFileSync(cfg, JSON.stringify(c));
  r = xpsr(['doctor', '--model', broken]);
  t.is(r.status, 1);
  t.regex(r.stdout, /FAIL controlnet/);
  t.regex(r.stdout, /expected \[32, 64, 3, 3\], found \[64, 64, 3, 3\]/);
});

test('parity exits 0 with the summary line, non-zero when a reference is off', (t) => {
  let r = xpsr(['parity', '--fixtures', fixtures, '--only', 'tokenizer,colorfix']);
  t.is(r.status, 0, r.stdout);
  t.regex(r.stdout, /^parity: 50 passed, 0 failed$/m);
  const dir = tmp();
  cpSync(path.join(fixtures, 'model', 'scheduler'), path.join(dir, 'model', 'scheduler'), { recursive: true });
  const f = readFileSync(path.join(fixtures, 'scheduler_ddpm.safetensors'));
  const n = Number(f.readBigUInt64LE(0));
  const header = JSON.parse(f.subarray(8, 8 + n).toString());
  const off = 8 + n + header.betas.data_offsets[0];
  f.writeFloatLE(f.readFloatLE(off + 400) + 0.01, off + 400); // corrupt one beta
  writeFileSync(path.join(dir, 'scheduler_ddpm.safetensors'), f);
  r = xpsr(['parity', '--fixtures', dir]);
  t.is(r.status, 1);
  t.regex(r.stdout, /FAIL +scheduler_ddpm +betas/);
  t.regex(r.stdout, /^SKIP +unet/m);
});

test('parity prints the training-only heads as SKIP, outside the pass count', (t) => {
  const r = xpsr(['parity', '--fixtures', fixtures, '--only', 'controlnet']);
  t.is(r.status, 0, r.stdout);
  const skips = r.stdout.split('\n').filter((l) => /^SKIP {2}controlnet .*training-only head/.test(l));
  t.true(skips.some((l) => /controlnet_cond_rgbs\.0/.test(l)) && skips.some((l) => /degradation_rgb_mid/.test(l)));
  const passes = r.stdout.split('\n').filter((l) => l.startsWith('PASS')).length;
  t.regex(
    r.stdout,
    new RegExp(`^parity: ${passes} passed, 0 failed \\(${skips.length} reference tensors of training-only heads not computed: SKIP\\)$`, 'm'),
  );
  t.is(xpsr(['parity']).status, 2);
});
