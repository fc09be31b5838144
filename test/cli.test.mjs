// The `xpsr` command as users run it: upscale (files, folders, JSON lines, errors), demo, doctor, parity.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { root, fixtures, model } from './helpers/fixtures.mjs';

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
  const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.true(events.some((e) => e.event === 'progress' && e.stage === 'denoise' && e.step === 2));
  const done = events.find((e) => e.event === 'done');
  t.is(done.width, 128);
  t.is(done.seed, 3);
  t.is(done.prompts.low, 'noisy');
});

test('sidecar prompt files in the official layout are used', (t) => {
  const dir = tmp();
  for (const [sub, text] of [['highlevel_prompt', '  a coffee cup on a table\nsecond line'], ['lowlevel_prompt_q', 'slightly blurry']]) {
    cpSync(img('coffee_32x24.png'), path.join(dir, 'coffee_32x24.png'));
    const d = path.join(dir, sub);
    spawnSync('mkdir', ['-p', d]);
    writeFileSync(path.join(d, 'coffee_32x24.txt'), text);
  }
  const r = xpsr(['upscale', path.join(dir, 'coffee_32x24.png'), '-o', path.join(dir, 'o.png'), ...quick, '--prompt-dir', dir, '--json']);
  t.is(r.status, 0, r.stderr);
  const done = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.event === 'done');
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

test('usage errors: missing -o, invalid option value, unknown command', (t) => {
  let r = xpsr(['upscale', img('coffee_32x24.png'), '--model', model]);
  t.not(r.status, 0);
  t.regex(r.stderr, /-o/);
  r = xpsr(['upscale', img('coffee_32x24.png'), '-o', path.join(tmp(), 'x.png'), ...quick, '--steps', '0']);
  t.is(r.status, 1);
  t.regex(r.stderr, /Invalid option 'steps'/);
  r = xpsr(['frobnicate']);
  t.is(r.status, 2);
});

test('demo runs the whole pipeline and says it is an installation check', (t) => {
  const out = path.join(tmp(), 'demo.png');
  const r = xpsr(['demo', '-o', out, '--device', 'cpu', '--steps', '2']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /INSTALLATION CHECK ONLY/);
  t.regex(r.stdout, /NOT a real restoration/);
  t.true(existsSync(out));
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
