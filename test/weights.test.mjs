// Weights as users have them (issue 14): original-layout single files (.safetensors fp32/fp16, .ckpt) with
// parity against the goldens, the bundled tokenizer, diffusers fp16 variants, model_index.json, the local
// Hugging Face cache (a synthetic one in a temp folder), `xpsr doctor --sd FILE` and the same pixels from a
// single file as from the diffusers folder.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import sharp from 'sharp';
import { XPSR } from '../dist/lib/xpsr.js';
import { Engine } from '../dist/lib/engine/engine.js';
import { runParity } from '../dist/lib/parity/index.js';
import { ClipTokenizer } from '../dist/lib/tokenizer/index.js';
import { readSafetensors, writeSafetensors, toFloat32 } from '../dist/lib/io/safetensors.js';
import {
  bundledTokenizer,
  BUNDLED_TOKENIZER_DIR,
  resolveWeights,
  resolveRepoSnapshot,
  hubCacheDirs,
  missingParts,
} from '../dist/lib/weights/index.js';
import { root, fixtures, model } from './helpers/fixtures.mjs';
import { ensureSingleFileFixtures, f32ToF16 } from './helpers/single-file-fixtures.mjs';

const files = ensureSingleFileFixtures();
const FP32 = files['sd15-single.safetensors'];
const FP16 = files['sd15-single-fp16.safetensors'];
const CKPT = files['sd15-single.ckpt'];
const bin = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const xpsrCli = (args, env = process.env) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 300_000, env });
const tmp = (p = 'xpsr-weights-') => mkdtempSync(path.join(tmpdir(), p));

/** A folder holding only the configs of the fixture's text encoder and VAE (its sizes are not SD-1.5's). */
function configsOnly() {
  const dir = tmp('xpsr-sdconfig-');
  for (const c of ['text_encoder', 'vae']) {
    mkdirSync(path.join(dir, c));
    cpSync(path.join(model, c, 'config.json'), path.join(dir, c, 'config.json'));
  }
  return dir;
}

/** A float16 copy of a float32 safetensors file (round to nearest even, as torch's .half()). */
function halfCopy(src, dst) {
  const f = readSafetensors(src);
  const out = new Map();
  for (const [k, t] of f.tensors) {
    if (t.dtype !== 'F32') {
      out.set(k, t);
      continue;
    }
    const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
    out.set(k, { dtype: 'F16', shape: t.shape, data: Uint16Array.from(bits, f32ToF16) });
  }
  writeSafetensors(dst, out);
}

const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

// ---- single files ------------------------------------------------------------------------------------

test('parity: the fp32 file and the .ckpt reproduce the main goldens, the fp16 file the fp16 goldens', async (t) => {
  const r = await runParity(fixtures, { only: ['single_file_fp32', 'single_file_ckpt', 'single_file_fp16'] });
  t.is(
    r.failed,
    0,
    r.lines
      .filter((l) => !l.pass)
      .map((l) => `${l.component} ${l.tensor} ${l.note ?? l.maxRel}`)
      .join('\n'),
  );
  for (const c of ['single_file_fp32', 'single_file_ckpt', 'single_file_fp16'])
    for (const part of ['text_encoder', 'vae_encoder', 'vae_decoder'])
      t.true(
        r.lines.some((l) => l.component === `${c}/${part}` && l.pass),
        `${c}/${part}`,
      );
  t.is(r.passed, 54);
});

test("a single file whose sizes are not SD-1.5's needs its configs, and says so", async (t) => {
  const e = await t.throwsAsync(XPSR.load({ sd: FP32, xpsr: model, device: 'cpu', onNotice: () => {} }));
  t.is(e.code, 'ERR_UNSUPPORTED');
  t.regex(e.message, /not Stable Diffusion 1\.5's \(hidden_size 32 where SD-1\.5 has 768/);
  t.regex(e.message, /--sd-config/);
});

test('a single file is refused as the XPSR checkpoint and for the UNet', async (t) => {
  let e = await t.throwsAsync(XPSR.load({ sd: model, xpsr: FP32, device: 'cpu', onNotice: () => {} }));
  t.is(e.code, 'ERR_INVALID_OPTION');
  const engine = await Engine.create({ device: 'cpu' });
  try {
    e = await t.throwsAsync(engine.loadUNet(FP32, { config: readFileSync(path.join(model, 'unet', 'config.json'), 'utf8') }));
    t.is(e.code, 'ERR_UNSUPPORTED');
    t.regex(e.message, /XPSR checkpoint/);
  } finally {
    engine.dispose();
  }
});

test('given configs are checked against the tensors (both names in shape errors)', async (t) => {
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const cfg = JSON.parse(readFileSync(path.join(model, 'vae', 'config.json'), 'utf8'));
    cfg.block_out_channels = [32, 64, 64, 64];
    let e = await t.throwsAsync(engine.loadVae(FP16, { config: cfg }));
    t.is(e.code, 'ERR_SHAPE_MISMATCH');
    t.regex(e.message, /block_out_channels\[1\] 64 in the config, 32 in the tensors/);
    // A file with one VAE tensor of the wrong shape: named as the file names it and as diffusers does.
    const f = readSafetensors(FP32);
    const bad = new Map(f.tensors);
    bad.set('first_stage_model.decoder.up.3.block.0.conv1.weight', { dtype: 'F32', shape: [64, 64, 1, 1], data: new Float32Array(64 * 64) });
    const p = path.join(tmp(), 'broken.safetensors');
    writeSafetensors(p, bad);
    e = await t.throwsAsync(engine.loadVae(p, { config: readFileSync(path.join(model, 'vae', 'config.json'), 'utf8') }));
    t.is(e.code, 'ERR_SHAPE_MISMATCH');
    t.true(
      e.message.includes("tensor 'decoder.up_blocks.0.resnets.0.conv1.weight' (in the file: 'first_stage_model.decoder.up.3.block.0.conv1.weight')"),
      e.message,
    );
  } finally {
    engine.dispose();
  }
});

test('the tensors a single file holds besides the text encoder and VAE are never read (NaN UNet loads fine)', async (t) => {
  const f = readSafetensors(FP32);
  const poisoned = new Map();
  for (const [k, v] of f.tensors)
    poisoned.set(k, k.startsWith('model.diffusion_model.') ? { dtype: 'F32', shape: v.shape, data: new Float32Array(v.data.length).fill(NaN) } : v);
  poisoned.set('model_ema.decay', { dtype: 'F32', shape: [], data: new Float32Array([NaN]) });
  const p = path.join(tmp(), 'nan-unet.safetensors');
  writeSafetensors(p, poisoned);
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const te = await engine.checkWeights('text_encoder', p, { config: readFileSync(path.join(model, 'text_encoder', 'config.json'), 'utf8') });
    const vae = await engine.checkWeights('vae', p, { config: readFileSync(path.join(model, 'vae', 'config.json'), 'utf8') });
    t.is(te.tensors, 36);
    t.is(vae.tensors, 180);
  } finally {
    engine.dispose();
  }
});

test('a bfloat16 single file loads too (converted tensor by tensor)', async (t) => {
  const f = readSafetensors(FP32);
  const bf = new Map();
  for (const [k, v] of f.tensors) {
    if (!k.startsWith('cond_stage_model.')) continue;
    const bits = new Uint32Array(v.data.buffer, v.data.byteOffset, v.data.length);
    bf.set(k, { dtype: 'BF16', shape: v.shape, data: Uint16Array.from(bits, (x) => ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff) });
  }
  const p = path.join(tmp(), 'bf16.safetensors');
  writeSafetensors(p, bf);
  const golden = readSafetensors(path.join(fixtures, 'text_encoder.safetensors'));
  const ids = golden.tensors.get('input_ids');
  const ref = toFloat32(golden.tensors.get('last_hidden_state'));
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const te = await engine.loadTextEncoder(p, { config: readFileSync(path.join(model, 'text_encoder', 'config.json'), 'utf8') });
    const out = (await te.encode(ids.data, ids.shape)).lastHiddenState.data;
    const scale = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    t.true(maxDiff(out, ref) < 0.05 * scale, `bf16 weights: max difference ${maxDiff(out, ref)} (|ref| up to ${scale})`);
  } finally {
    engine.dispose();
  }
});

// ---- bundled tokenizer ---------------------------------------------------------------------------------

test('the bundled tokenizer is the SD-1.5 CLIP vocabulary (fixture tokenizer byte for byte), with its MIT license', async (t) => {
  for (const f of ['vocab.json', 'merges.txt'])
    t.true(gunzipSync(readFileSync(path.join(BUNDLED_TOKENIZER_DIR, `${f}.gz`))).equals(readFileSync(path.join(model, 'tokenizer', f))), f);
  const license = readFileSync(path.join(BUNDLED_TOKENIZER_DIR, 'LICENSE'), 'utf8');
  t.regex(license, /MIT License/);
  t.regex(license, /Copyright \(c\) 2021 OpenAI/);
  t.regex(license, /Permission is hereby granted, free of charge/);
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  t.true(pkg.files.includes('data'), 'package.json "files" ships data/');
  const tok = bundledTokenizer();
  const cases = JSON.parse(readFileSync(path.join(fixtures, 'tokenizer_cases.json'), 'utf8')).cases;
  for (const c of cases) t.deepEqual(Array.from(tok.encode(c.text).ids), c.input_ids, c.text);
  t.is(tok.vocabSize, (await ClipTokenizer.fromDirectory(path.join(model, 'tokenizer'))).vocabSize);
});

// ---- diffusers variants and model_index.json ----------------------------------------------------------

test('fp16 variants: a folder with only the variant works; variant: fp16 prefers it', async (t) => {
  const dir = tmp();
  cpSync(path.join(model, 'text_encoder', 'config.json'), path.join(dir, 'config.json'));
  halfCopy(path.join(model, 'text_encoder', 'model.safetensors'), path.join(dir, 'model.fp16.safetensors'));
  const golden = readSafetensors(path.join(fixtures, 'text_encoder.safetensors'));
  const golden16 = readSafetensors(path.join(fixtures, 'single_file', 'fp16', 'text_encoder.safetensors'));
  const ids = golden.tensors.get('input_ids');
  const ref = toFloat32(golden.tensors.get('last_hidden_state'));
  const ref16 = toFloat32(golden16.tensors.get('last_hidden_state'));
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const run = async (options) => {
      const te = await engine.loadTextEncoder(dir, options);
      try {
        return (await te.encode(ids.data, ids.shape)).lastHiddenState.data;
      } finally {
        te.unload();
      }
    };
    t.true(maxDiff(await run({}), ref16) < 1e-4, 'only the fp16 file: used');
    cpSync(path.join(model, 'text_encoder', 'model.safetensors'), path.join(dir, 'model.safetensors'));
    t.true(maxDiff(await run({}), ref) < 1e-4, 'both: the plain file by default');
    t.true(maxDiff(await run({ variant: 'fp16' }), ref16) < 1e-4, 'variant fp16: the fp16 file');
    t.true(maxDiff(ref, ref16) > 1e-3, 'the two goldens differ, so the file used is seen');
  } finally {
    engine.dispose();
  }
});

test('model_index.json is respected', (t) => {
  const make = (edit) => {
    const dir = tmp();
    cpSync(model, dir, { recursive: true });
    const f = path.join(dir, 'model_index.json');
    const j = JSON.parse(readFileSync(f, 'utf8'));
    edit(j, dir);
    writeFileSync(f, JSON.stringify(j));
    return dir;
  };
  let e = t.throws(() => resolveWeights({ model: make((j) => (j.text_encoder = ['transformers', 'CLIPTextModelWithProjection'])) }));
  t.is(e.code, 'ERR_UNSUPPORTED');
  t.regex(e.message, /says text_encoder is CLIPTextModelWithProjection/);
  e = t.throws(() => resolveWeights({ model: make((j) => (j.text_encoder_2 = ['transformers', 'CLIPTextModelWithProjection'])) }));
  t.regex(e.message, /SDXL/);
  e = t.throws(() => resolveWeights({ model: make((j, dir) => rmSync(path.join(dir, 'vae'), { recursive: true })) }));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.regex(e.message, /model_index\.json lists vae \(AutoencoderKL\) but .*vae\/ is missing/);
  e = t.throws(() => resolveWeights({ model: make((j) => (j.tokenizer = [null, null])) }));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.regex(e.message, /tokenizer\//);
  const r = resolveWeights({ model });
  t.is(r.sdLayout, 'diffusers folder');
  t.is(r.tokenizer, path.join(model, 'tokenizer'));
});

// ---- the local Hugging Face cache ----------------------------------------------------------------------

/**
 * A cache in huggingface_hub's layout: blobs/ (here: links to the fixture files), refs/main, and snapshots
 * whose files link into blobs/ (relative links, as the hub client writes them).
 */
function fakeCache(repoId, revisions, main) {
  const cache = tmp('xpsr-hf-');
  const repo = path.join(cache, `models--${repoId.replace('/', '--')}`);
  mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  mkdirSync(path.join(repo, 'refs'));
  if (main) writeFileSync(path.join(repo, 'refs', 'main'), main);
  let n = 0;
  for (const [rev, { parts, broken = [], age }] of Object.entries(revisions)) {
    const snap = path.join(repo, 'snapshots', rev);
    for (const part of parts)
      for (const f of [
        'config.json',
        'model.safetensors',
        'diffusion_pytorch_model.safetensors',
        'vocab.json',
        'merges.txt',
        'scheduler_config.json',
      ]) {
        const src = path.join(model, part, f);
        if (!existsSync(src)) continue;
        const blob = path.join(repo, 'blobs', `blob${n++}`);
        if (!broken.includes(`${part}/${f}`)) symlinkSync(src, blob);
        mkdirSync(path.join(snap, part), { recursive: true });
        symlinkSync(path.relative(path.join(snap, part), blob), path.join(snap, part, f));
      }
    utimesSync(snap, age, age);
  }
  return cache;
}

const SD = ['text_encoder', 'tokenizer', 'vae', 'scheduler'];

test('a repo id resolves to the newest complete snapshot, offline; incomplete ones are skipped', (t) => {
  const now = Date.now() / 1000;
  const cache = fakeCache(
    'org/sd15',
    {
      aaa: { parts: SD, age: now - 300 },
      bbb: { parts: SD, age: now - 100 },
      ccc: { parts: SD, broken: ['vae/diffusion_pytorch_model.safetensors'], age: now }, // interrupted download
    },
    'ccc',
  );
  const env = { HF_HUB_CACHE: cache };
  const s = resolveRepoSnapshot('org/sd15', (d) => missingParts(d, ['text_encoder', 'tokenizer', 'vae']), env);
  t.is(s.revision, 'bbb', 'refs/main (ccc) is incomplete: the newest complete one');
  t.is(s.dir, path.join(cache, 'models--org--sd15', 'snapshots', 'bbb'));
  // refs/main wins over age when complete.
  const cache2 = fakeCache('org/sd15', { old: { parts: SD, age: now - 500 }, new: { parts: SD, age: now } }, 'old');
  t.is(resolveRepoSnapshot('org/sd15', (d) => missingParts(d, ['vae']), { HF_HUB_CACHE: cache2 }).revision, 'old');
  // HF_HOME/hub and the default path are looked at; the error lists every place.
  const home = tmp('xpsr-hfhome-');
  const e = t.throws(() => resolveRepoSnapshot('org/other', () => undefined, { HF_HOME: home, HF_HUB_CACHE: cache }));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.true(e.message.includes(path.join(cache, 'models--org--other')), e.message);
  t.true(e.message.includes(path.join(home, 'hub', 'models--org--other')), e.message);
  t.true(e.message.includes(path.join('.cache', 'huggingface', 'hub', 'models--org--other')), e.message);
  t.regex(e.message, /nothing is downloaded/);
  const e2 = t.throws(() =>
    resolveRepoSnapshot('org/sd15', (d) => missingParts(d, ['vae']), {
      HF_HUB_CACHE: fakeCache('org/sd15', { ccc: { parts: SD, broken: ['vae/config.json'], age: now } }, 'ccc'),
    }),
  );
  t.regex(e2.message, /snapshots\/ccc \(refs\/main\): incomplete, vae\/config\.json missing/);
  t.deepEqual(hubCacheDirs({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }).slice(0, 2), ['/a', '/b/hub']);
});

test.serial('XPSR.load and doctor take repo ids from the cache (HF_HUB_CACHE)', async (t) => {
  const now = Date.now() / 1000;
  const sdCache = fakeCache('stable-diffusion-v1-5/stable-diffusion-v1-5', { rev1: { parts: SD, age: now } }, 'rev1');
  // The XPSR checkpoint as a second repo in the same cache.
  const xp = fakeCache('org/xpsr', { rev2: { parts: ['unet', 'controlnet'], age: now } }, 'rev2');
  cpSync(path.join(xp, 'models--org--xpsr'), path.join(sdCache, 'models--org--xpsr'), { recursive: true, verbatimSymlinks: true });
  const saved = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = sdCache;
  try {
    const r = resolveWeights({ sd: 'stable-diffusion-v1-5/stable-diffusion-v1-5', xpsr: 'org/xpsr' });
    t.is(r.textEncoder.path, path.join(sdCache, 'models--stable-diffusion-v1-5--stable-diffusion-v1-5', 'snapshots', 'rev1', 'text_encoder'));
    t.is(r.snapshots.length, 2);
    const x = await XPSR.load({ sd: 'stable-diffusion-v1-5/stable-diffusion-v1-5', xpsr: 'org/xpsr', device: 'cpu', onNotice: () => {} });
    await x.dispose();
    const d = xpsrCli(['doctor', '--sd', 'stable-diffusion-v1-5/stable-diffusion-v1-5', '--xpsr', 'org/xpsr'], {
      ...process.env,
      HF_HUB_CACHE: sdCache,
    });
    t.is(d.status, 0, d.stdout + d.stderr);
    t.regex(d.stdout, /sd: stable-diffusion-v1-5\/stable-diffusion-v1-5 = Hugging Face cache snapshot .*rev1/);
  } finally {
    if (saved === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = saved;
  }
});

// ---- doctor and the CLI --------------------------------------------------------------------------------

test('doctor --sd FILE reports the layout, dtype, what is used and what is ignored', (t) => {
  let r = xpsrCli(['doctor', '--sd', FP16]);
  t.is(r.status, 1, 'the fixture is not SD-1.5-sized: configs needed');
  t.regex(r.stdout, /original Stable Diffusion single file \(CompVis\/LDM names\), safetensors, F16, 866 tensors/);
  t.regex(r.stdout, /uses {4}text encoder \(CLIP\): cond_stage_model\.transformer\.\* \(with text_model\.\), 36 tensors, F16/);
  t.regex(r.stdout, /uses {4}VAE: first_stage_model\.\*, 180 tensors, F16/);
  t.regex(r.stdout, /ignores UNet \(SD-1\.5's; XPSR brings its own\): model\.diffusion_model\.\*, 650 tensors, F16, .* \(never read\)/);
  t.regex(r.stdout, /tokenizer: the SD-1\.5 CLIP tokenizer shipped with xpsr-native/);
  t.regex(r.stdout, /FAIL text_encoder .*--sd-config/);
  r = xpsrCli(['doctor', '--sd', CKPT, '--sd-config', configsOnly()]);
  t.is(r.status, 0, r.stdout);
  t.regex(r.stdout, /pytorch zip, F32/);
  t.regex(r.stdout, /OK {3}text_encoder +36 tensors/);
  t.regex(r.stdout, /OK {3}vae +180 tensors/);
  t.regex(r.stdout, /OK {3}tokenizer +49408 tokens {2}bundled/);
});

test('the same pixels from the single file (CLI --sd FILE) as from the diffusers folder', async (t) => {
  const dir = tmp();
  const img = path.join(fixtures, 'images', 'coffee_32x24.png');
  // --no-metadata: the embedded settings name the weights paths, which differ between the two runs
  const common = [
    '--device',
    'cpu',
    '--steps',
    '3',
    '--process-size',
    '64',
    '--seed',
    '7',
    '--prompt-high',
    'a cup of coffee',
    '-q',
    '--no-metadata',
  ];
  const a = path.join(dir, 'folder.png');
  const b = path.join(dir, 'single.png');
  const c = path.join(dir, 'single-fp16.png');
  let r = xpsrCli(['upscale', img, '-o', a, '--model', model, ...common]);
  t.is(r.status, 0, r.stderr);
  // Only the configs of the tiny text encoder / VAE: tokenizer bundled, scheduler SD-1.5's.
  r = xpsrCli(['upscale', img, '-o', b, '--sd', FP32, '--sd-config', configsOnly(), '--xpsr', model, ...common]);
  t.is(r.status, 0, r.stderr);
  t.true(readFileSync(a).equals(readFileSync(b)), 'fp32 single file: identical PNG bytes');
  // The fp16 file is the same model with weights rounded to float16: a run gives nearly the same image.
  r = xpsrCli(['upscale', img, '-o', c, '--sd', FP16, '--sd-config', configsOnly(), '--xpsr', model, ...common]);
  t.is(r.status, 0, r.stderr);
  const [pa, pc] = await Promise.all([a, c].map((f) => sharp(f).raw().toBuffer()));
  t.is(pa.length, pc.length);
  t.true(maxDiff(pa, pc) <= 8, `max pixel difference ${maxDiff(pa, pc)}`);
});
