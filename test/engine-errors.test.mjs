// Bad weights and bad inputs never crash the process: each case rejects with a clear error naming the
// file / key / shapes, and the same engine keeps working afterwards.
import test from 'ava';
import { readFileSync, writeFileSync, rmSync, truncateSync, statSync } from 'node:fs';
import path from 'node:path';
import { Engine } from '../dist/lib/engine/engine.js';
import { readSafetensors, writeSafetensors } from '../dist/lib/io/safetensors.js';
import { copyComponent, model, writeTorchZip, PICKLE_LIST, PICKLE_OS_SYSTEM } from './helpers/fixtures.mjs';

const engine = await Engine.create({ device: 'cpu' });
test.after.always(() => engine.dispose());

const TE_FILE = 'model.safetensors';

function brokenTextEncoder(mutate) {
  const dir = copyComponent('text_encoder');
  const f = readSafetensors(path.join(dir, TE_FILE));
  mutate(f.tensors);
  writeSafetensors(path.join(dir, TE_FILE), f.tensors, f.metadata);
  return dir;
}

async function stillWorks(t) {
  const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  const ids = new Int32Array(77).fill(49407);
  ids[0] = 49406;
  const r = await te.encode(ids, [1, 77]);
  t.deepEqual(r.lastHiddenState.shape, [1, 77, 32]);
  te.unload();
}

test.serial('truncated safetensors file', async (t) => {
  const dir = copyComponent('text_encoder');
  const file = path.join(dir, TE_FILE);
  truncateSync(file, Math.floor(statSync(file).size / 2));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_INVALID');
  t.true(e.message.includes(file), e.message);
  await stillWorks(t);
});

test.serial('header length larger than the file', async (t) => {
  const dir = copyComponent('text_encoder');
  const file = path.join(dir, TE_FILE);
  const b = readFileSync(file);
  b.writeBigUInt64LE(BigInt(b.length) * 4n, 0);
  writeFileSync(file, b);
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_INVALID');
  t.regex(e.message, /header/i);
  t.true(e.message.includes(file));
  await stillWorks(t);
});

test.serial('wrong dtype (an integer tensor where a float weight belongs)', async (t) => {
  const key = 'text_model.final_layer_norm.weight';
  const dir = brokenTextEncoder((m) => m.set(key, { dtype: 'I64', shape: [32], data: new BigInt64Array(32) }));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.true(e.message.includes(key), e.message);
  t.regex(e.message, /float/);
  await stillWorks(t);
});

test.serial('wrong shape names the key, the expected and the found shape', async (t) => {
  const key = 'text_model.encoder.layers.0.mlp.fc1.weight';
  const dir = brokenTextEncoder((m) => m.set(key, { dtype: 'F32', shape: [64, 32], data: new Float32Array(64 * 32) }));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_SHAPE_MISMATCH');
  t.true(e.message.includes(`tensor '${key}'`), e.message);
  t.true(e.message.includes('expected [128, 32], found [64, 32]'), e.message);
  t.true(e.message.includes(path.join(dir, TE_FILE)), e.message);
  await stillWorks(t);
});

test.serial('missing key', async (t) => {
  const key = 'text_model.encoder.layers.1.layer_norm2.bias';
  const dir = brokenTextEncoder((m) => m.delete(key));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.true(e.message.includes(`missing tensor '${key}' (expected [32])`), e.message);
  await stillWorks(t);
});

test.serial('unexpected key', async (t) => {
  const dir = brokenTextEncoder((m) => m.set('text_model.extra.weight', { dtype: 'F32', shape: [3], data: new Float32Array(3) }));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_INVALID');
  t.true(e.message.includes("unexpected tensor 'text_model.extra.weight' [3]"), e.message);
});

test.serial('NaN in a weight', async (t) => {
  const key = 'text_model.final_layer_norm.bias';
  const dir = brokenTextEncoder((m) => m.set(key, { dtype: 'F32', shape: [32], data: new Float32Array(32).fill(NaN) }));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.regex(e.message, /32 of 32 values are NaN or Inf/);
});

test.serial('a .bin whose pickle is not a state dict', async (t) => {
  const dir = copyComponent('text_encoder');
  rmSync(path.join(dir, TE_FILE));
  writeTorchZip(path.join(dir, 'pytorch_model.bin'), PICKLE_LIST);
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_INVALID');
  t.regex(e.message, /not a state dict/);
  t.true(e.message.includes('pytorch_model.bin'));
  await stillWorks(t);
});

test.serial('a .bin whose pickle calls os.system is refused, never executed', async (t) => {
  const dir = copyComponent('text_encoder');
  rmSync(path.join(dir, TE_FILE));
  writeTorchZip(path.join(dir, 'pytorch_model.bin'), PICKLE_OS_SYSTEM);
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_INVALID');
  t.regex(e.message, /os\.system.*not allowed/);
  await stillWorks(t);
});

test.serial('no weights file at all', async (t) => {
  const dir = copyComponent('text_encoder');
  rmSync(path.join(dir, TE_FILE));
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  t.regex(e.message, /model\.safetensors/);
});

test.serial('malformed config.json', async (t) => {
  const dir = copyComponent('text_encoder');
  writeFileSync(path.join(dir, 'config.json'), '{"hidden_size": 32,');
  const e = await t.throwsAsync(engine.loadTextEncoder(dir));
  t.regex(e.message, /config\.json/);
});

test.serial('unsupported config values are refused by name', async (t) => {
  const dir = copyComponent('unet');
  const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  cfg.resnet_time_scale_shift = 'scale_shift';
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const e = await t.throwsAsync(engine.loadUNet(dir));
  t.is(e.code, 'ERR_UNSUPPORTED');
  t.regex(e.message, /resnet_time_scale_shift/);
});

test.serial('bad inputs: wrong shape, NaN, out-of-vocabulary ids', async (t) => {
  const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  const vae = await engine.loadVae(path.join(model, 'vae'));
  let e = await t.throwsAsync(te.encode(new Int32Array(78).fill(1), [1, 78]));
  t.is(e.code, 'ERR_SHAPE_MISMATCH');
  e = await t.throwsAsync(te.encode(new Int32Array(77).fill(60000), [1, 77]));
  t.regex(e.message, /outside the vocabulary/);
  e = await t.throwsAsync(vae.decode({ shape: [1, 3, 8, 8], data: new Float32Array(192) }));
  t.is(e.code, 'ERR_SHAPE_MISMATCH');
  t.regex(e.message, /4 channels/);
  const z = new Float32Array(4 * 8 * 8);
  z[5] = NaN;
  e = await t.throwsAsync(vae.decode({ shape: [1, 4, 8, 8], data: z }));
  t.regex(e.message, /NaN/);
  const ok = await vae.decode({ shape: [1, 4, 8, 8], data: new Float32Array(256) });
  t.deepEqual(ok.image.shape, [1, 3, 64, 64]);
  te.unload();
  vae.unload();
});

test.serial('a cancelled run rejects with ERR_CANCELLED and the engine keeps serving', async (t) => {
  const vae = await engine.loadVae(path.join(model, 'vae'));
  const ctl = new AbortController();
  const z = { shape: [1, 4, 96, 96], data: new Float32Array(4 * 96 * 96) };
  const p = vae.decode(z, { signal: ctl.signal });
  setTimeout(() => ctl.abort(), 30);
  const e = await t.throwsAsync(p);
  t.is(e.code, 'ERR_CANCELLED');
  const pre = new AbortController();
  pre.abort();
  t.is((await t.throwsAsync(vae.decode(z, { signal: pre.signal }))).code, 'ERR_CANCELLED');
  const ok = await vae.decode({ shape: [1, 4, 8, 8], data: new Float32Array(256) });
  t.deepEqual(ok.image.shape, [1, 3, 64, 64]);
  vae.unload();
});

test.serial('asking for CUDA on a build or machine without it gives a clear error', async (t) => {
  const e = await t.throwsAsync(
    Engine.create({ device: 'cuda' }).then((x) => {
      x.dispose();
      throw Object.assign(new Error('cuda available'), { code: 'SKIP' });
    }),
  );
  if (e.code === 'SKIP') return t.pass('a CUDA device is present');
  t.is(e.code, 'ERR_DEVICE_UNAVAILABLE');
  t.regex(e.message, /cuda/i);
});

test.serial('an unknown device string is refused', async (t) => {
  const e = await t.throwsAsync(Engine.create({ device: 'tpu' }));
  t.is(e.code, 'ERR_INVALID_ARGUMENT');
});

test.serial('plans are reused across calls of the same shape', async (t) => {
  const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  const ids = new Int32Array(77).fill(49407);
  const a = await te.encode(ids, [1, 77]);
  const b = await te.encode(ids, [1, 77]);
  t.false(a.stats.planReused);
  t.true(b.stats.planReused);
  te.unload();
});

test.serial('a PyTorch .bin state dict loads and computes exactly like the safetensors file', async (t) => {
  const { writeTorchStateDict } = await import('./helpers/torch-bin.mjs');
  const { toFloat32 } = await import('../dist/lib/io/safetensors.js');
  const dir = copyComponent('text_encoder');
  const f = readSafetensors(path.join(dir, TE_FILE));
  const m = new Map([...f.tensors].map(([k, v]) => [k, { shape: v.shape, data: toFloat32(v) }]));
  rmSync(path.join(dir, TE_FILE));
  writeTorchStateDict(path.join(dir, 'pytorch_model.bin'), m);
  const ids = new Int32Array(77).fill(49407);
  ids[0] = 49406;
  ids[1] = 320;
  const a = await engine.loadTextEncoder(dir);
  const b = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  const ra = await a.encode(ids, [1, 77]);
  const rb = await b.encode(ids, [1, 77]);
  t.deepEqual(Array.from(ra.lastHiddenState.data), Array.from(rb.lastHiddenState.data));
  a.unload();
  b.unload();
});
