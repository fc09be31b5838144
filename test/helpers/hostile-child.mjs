// Child process of engine-hostile.test.mjs: runs one group of hostile cases against the engine and prints
// one JSON line per case ({ name, code, message, ms }). A crash (SIGFPE, abort, uncaught C++ exception)
// kills this process, never the test runner; the parent asserts a normal exit and the code of every case.
//   node test/helpers/hostile-child.mjs configs|napi
import { mkdtempSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Engine } from '../../dist/lib/engine/engine.js';
import { loadNative } from '../../dist/lib/native.js';
import { model } from './fixtures.mjs';
import { CONFIG_CASES } from './hostile-configs.mjs';

const group = process.argv[2];

async function record(name, fn) {
  const t0 = performance.now();
  let code = 'OK';
  let message = '';
  try {
    await fn();
  } catch (e) {
    code = e?.code ?? `uncoded ${e?.name}`;
    message = String(e?.message ?? e);
  }
  process.stdout.write(`${JSON.stringify({ name, code, message, ms: performance.now() - t0 })}\n`);
}

const fixtureConfig = (component) => JSON.parse(readFileSync(path.join(model, component, 'config.json'), 'utf8'));

/** A temp copy of a fixture component whose config.json is the fixture's with `patch` applied (or `text`). */
function patchedFolder(component, patch, text) {
  const dir = mkdtempSync(path.join(tmpdir(), `xpsr-hostile-${component}-`));
  cpSync(path.join(model, component), dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), text ?? JSON.stringify({ ...fixtureConfig(component), ...patch }));
  return dir;
}

const loaders = {
  text_encoder: (e, dir) => e.loadTextEncoder(dir),
  vae: (e, dir) => e.loadVae(dir),
  unet: (e, dir) => e.loadUNet(dir),
  controlnet: (e, dir) => e.loadControlNet(dir),
};

async function configs() {
  const engine = await Engine.create({ device: 'cpu', threads: 1 });
  for (const [component, patch, key] of CONFIG_CASES) {
    const dir = patchedFolder(component, patch);
    const tag = `${component} ${JSON.stringify(patch)} | ${key}`;
    await record(`folder ${tag}`, () => loaders[component](engine, dir));
    await record(`check ${tag}`, () => engine.checkWeights(component, dir));
    await record(`synthetic ${tag}`, () => engine.loadSynthetic(component, { ...fixtureConfig(component), ...patch }));
  }
  for (const component of Object.keys(loaders))
    await record(`folder ${component} "[]" | the config must be a JSON object`, () => loaders[component](engine, patchedFolder(component, {}, '[]')));
  // The same engine still loads and runs a good model.
  await record('still works', async () => {
    const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
    const r = await te.encode(new Int32Array(77).fill(49407), [1, 77]);
    if (r.lastHiddenState.shape.join() !== '1,77,32') throw new Error('wrong shape');
  });
  engine.dispose();
}

const T = (shape, fill = 0) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });

async function napi() {
  const addon = loadNative();
  const h = new addon.NativeEngine({ device: 'cpu', threads: 1 });
  const load = (kind) => h.load(kind, { path: path.join(model, kind) }).then((i) => i.id);
  const te = await load('text_encoder');
  const vae = await load('vae');
  const cn = await load('controlnet');
  const un = await load('unet');
  const step = (patch) => ({
    controlnet: cn,
    unet: un,
    sample: T([2, 4, 8, 8]),
    timestep: 500,
    ctxHigh: T([2, 77, 32]),
    ctxLow: T([2, 77, 32]),
    cond: T([2, 16, 8, 8]),
    ...patch,
  });
  const cases = [
    [
      'timestepFeatures is gone (dead code that aborted the process)',
      () => {
        if ('timestepFeatures' in addon) return addon.timestepFeatures(1, -2);
        throw Object.assign(new Error('absent'), { code: 'ABSENT' });
      },
    ],
    ['device cuda:x', () => new addon.NativeEngine({ device: 'cuda:x' })],
    ['device cuda:99999999', () => new addon.NativeEngine({ device: 'cuda:99999999' })],
    ['threads -1', () => new addon.NativeEngine({ device: 'cpu', threads: -1 })],
    ['threads 1.5', () => new addon.NativeEngine({ device: 'cpu', threads: 1.5 })],
    ['load unknown kind', () => h.load('nope', {})],
    ['load options not an object', () => h.load('vae', 5)],
    ['load negative seed', () => h.load('vae', { synthetic: true, configJson: '{}', seed: -1 })],
    ['load synthetic without config', () => h.load('vae', { synthetic: true })],
    ['textEncode without a request', () => h.textEncode()],
    ['textEncode negative shape', () => h.textEncode({ model: te, inputIds: { shape: [-2, 5], data: new Int32Array(0) } })],
    ['textEncode 2^40 tokens', () => h.textEncode({ model: te, inputIds: { shape: [1, 2 ** 40], data: new Int32Array(1) } })],
    ['textEncode float ids', () => h.textEncode({ model: te, inputIds: { shape: [1, 3], data: new Float32Array(3) } })],
    ['textEncode ids outside the vocabulary', () => h.textEncode({ model: te, inputIds: { shape: [1, 3], data: new Int32Array([1, -5, 2]) } })],
    ['vaeDecode absurd shape', () => h.vaeDecode({ model: vae, z: { shape: [1, 4, 1e6, 1e6], data: new Float32Array(4) } })],
    ['vaeDecode 5-D shape', () => h.vaeDecode({ model: vae, z: T([1, 4, 2, 2, 2]) })],
    ['vaeDecode data not a Float32Array', () => h.vaeDecode({ model: vae, z: { shape: [1, 4, 2, 2], data: [0, 1] } })],
    ['vaeDecode cancel argument not a CancelFlag', () => h.vaeDecode({ model: vae, z: T([1, 4, 2, 2]) }, {})],
    ['vaeDecode unknown model', () => h.vaeDecode({ model: 999, z: T([1, 4, 2, 2]) })],
    ['vaeDecode a text encoder', () => h.vaeDecode({ model: te, z: T([1, 4, 2, 2]) })],
    ['vaeDecode NaN', () => h.vaeDecode({ model: vae, z: T([1, 4, 2, 2], NaN) })],
    ['vaeDecodeTiled tile 2.5', () => h.vaeDecodeTiled({ model: vae, z: T([1, 4, 8, 8]), tile: 2.5 })],
    ['vaeDecodeTiled tile 0', () => h.vaeDecodeTiled({ model: vae, z: T([1, 4, 8, 8]), tile: 0 })],
    ['condEmbedding 1 channel', () => h.condEmbedding({ model: cn, image: T([1, 1, 16, 16]) })],
    ['step timestep NaN', () => h.step(step({ timestep: NaN }))],
    ['step conditioningScale Infinity', () => h.step(step({ conditioningScale: Infinity }))],
    ['step both cond and image', () => h.step(step({ image: T([2, 3, 64, 64]) }))],
    ['step neither cond nor image', () => h.step(step({ cond: undefined }))],
    ['step reuseConstants before any constants', () => h.step(step({ reuseConstants: true, sample: T([2, 4, 8, 16]), cond: T([2, 16, 8, 16]) }))],
    ['step ctxHigh rows differ from the sample', () => h.step(step({ ctxHigh: T([3, 77, 32]) }))],
    ['step condition size differs from the latent', () => h.step(step({ cond: T([2, 16, 4, 4]) }))],
    ['step models swapped', () => h.step(step({ controlnet: un, unet: cn }))],
    [
      'unetForward no residuals',
      () => h.unetForward({ model: un, sample: T([1, 4, 8, 8]), timestep: 1, ctxHigh: T([1, 77, 32]), down: [], mid: T([1, 64, 1, 1]) }),
    ],
    ['planStep absurd sizes', () => h.planStep({ controlnet: cn, unet: un, batch: 1e9, height: 1e9, width: 1e9 })],
    ['planStep too large', () => h.planStep({ controlnet: cn, unet: un, batch: 4096, height: 65536, width: 65536 })],
    ['planStep without sizes', () => h.planStep({ controlnet: cn, unet: un })],
    ['unload a string', () => h.unload('x')],
    ['unload an unknown id (idempotent)', () => h.unload(12345)],
    [
      'disposed engine',
      () => {
        h.dispose();
        return h.textEncode({ model: te, inputIds: { shape: [1, 1], data: new Int32Array(1) } });
      },
    ],
  ];
  for (const [name, fn] of cases) await record(name, fn);
}

if (group === 'configs') await configs();
else if (group === 'napi') await napi();
else throw new Error(`unknown group ${group}`);
