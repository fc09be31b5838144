// Inputs that used to crash the process (SIGFPE on `norm_num_groups: 0`, std::length_error from
// timestepFeatures(t, -2), absurd config sizes) run in a CHILD process, where a crash is fatal: each case
// must end in a coded error and the child must exit normally (helpers/hostile-child.mjs).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { root } from './helpers/fixtures.mjs';
import { CONFIG_CASES } from './helpers/hostile-configs.mjs';

function runChild(group) {
  const r = spawnSync(process.execPath, [path.join(root, 'test', 'helpers', 'hostile-child.mjs'), group], {
    cwd: root,
    encoding: 'utf8',
    timeout: 300_000,
    maxBuffer: 1 << 26,
  });
  const lines = (r.stdout ?? '')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  return { status: r.status, signal: r.signal, stderr: r.stderr ?? '', byName: new Map(lines.map((l) => [l.name, l])), lines };
}

function exitedNormally(t, r) {
  t.is(r.signal, null, `the child was killed by ${r.signal}; last case: ${r.lines.at(-1)?.name}\n${r.stderr}`);
  t.is(r.status, 0, r.stderr);
}

test('hostile config.json values give ERR_WEIGHTS_INVALID naming the file and the key, before anything is built', (t) => {
  const r = runChild('configs');
  exitedNormally(t, r);
  let slowest = 0;
  for (const [component, patch, key] of CONFIG_CASES) {
    const tag = `${component} ${JSON.stringify(patch)} | ${key}`;
    for (const how of ['folder', 'check', 'synthetic']) {
      const l = r.byName.get(`${how} ${tag}`);
      if (!t.truthy(l, `no result for ${how} ${tag}`)) continue;
      t.is(l.code, 'ERR_WEIGHTS_INVALID', `${how} ${tag}: ${l.message}`);
      t.true(l.message.includes(key), `${how} ${tag}: ${l.message}`);
      t.regex(l.message, how === 'synthetic' ? /config\.json \(given\)/ : /xpsr-hostile-[^ ]*\/config\.json/, `${how} ${tag} names no file`);
      slowest = Math.max(slowest, l.ms);
    }
  }
  for (const component of ['text_encoder', 'vae', 'unet', 'controlnet']) {
    const l = r.byName.get(`folder ${component} "[]" | the config must be a JSON object`);
    t.is(l?.code, 'ERR_WEIGHTS_INVALID', l?.message);
  }
  t.is(r.byName.get('still works')?.code, 'OK', r.byName.get('still works')?.message);
  t.log(`${r.lines.length} cases, slowest ${slowest.toFixed(1)} ms`);
});

// Expected code of every case of the 'napi' group (hostile arguments to each native method).
const NAPI_CASES = {
  'timestepFeatures is gone (dead code that aborted the process)': 'ABSENT',
  'device cuda:x': 'ERR_INVALID_ARGUMENT',
  'device cuda:99999999': 'ERR_INVALID_ARGUMENT',
  'threads -1': 'ERR_INVALID_ARGUMENT',
  'threads 1.5': 'ERR_INVALID_ARGUMENT',
  'load unknown kind': 'ERR_INVALID_ARGUMENT',
  'load options not an object': 'ERR_INVALID_ARGUMENT',
  'load negative seed': 'ERR_INVALID_ARGUMENT',
  'load synthetic without config': 'ERR_INVALID_ARGUMENT',
  'textEncode without a request': 'ERR_INVALID_ARGUMENT',
  'textEncode negative shape': 'ERR_INVALID_ARGUMENT',
  'textEncode 2^40 tokens': 'ERR_SHAPE_MISMATCH',
  'textEncode float ids': 'ERR_INVALID_ARGUMENT',
  'textEncode ids outside the vocabulary': 'ERR_INVALID_ARGUMENT',
  'vaeDecode absurd shape': 'ERR_SHAPE_MISMATCH',
  'vaeDecode 5-D shape': 'ERR_SHAPE_MISMATCH',
  'vaeDecode data not a Float32Array': 'ERR_INVALID_ARGUMENT',
  'vaeDecode cancel argument not a CancelFlag': 'ERR_INVALID_ARGUMENT',
  'vaeDecode unknown model': 'ERR_INVALID_ARGUMENT',
  'vaeDecode a text encoder': 'ERR_INVALID_ARGUMENT',
  'vaeDecode NaN': 'ERR_INVALID_ARGUMENT',
  'vaeDecodeTiled tile 2.5': 'ERR_INVALID_ARGUMENT',
  'vaeDecodeTiled tile 0': 'ERR_INVALID_ARGUMENT',
  'condEmbedding 1 channel': 'ERR_SHAPE_MISMATCH',
  'step timestep NaN': 'ERR_INVALID_ARGUMENT',
  'step conditioningScale Infinity': 'ERR_INVALID_ARGUMENT',
  'step both cond and image': 'ERR_INVALID_ARGUMENT',
  'step neither cond nor image': 'ERR_INVALID_ARGUMENT',
  'step reuseConstants before any constants': 'ERR_INVALID_ARGUMENT',
  'step ctxHigh rows differ from the sample': 'ERR_SHAPE_MISMATCH',
  'step condition size differs from the latent': 'ERR_SHAPE_MISMATCH',
  'step models swapped': 'ERR_INVALID_ARGUMENT',
  'unetForward no residuals': 'ERR_SHAPE_MISMATCH',
  'planStep absurd sizes': 'ERR_INVALID_ARGUMENT',
  'planStep too large': 'ERR_SHAPE_MISMATCH',
  'planStep without sizes': 'ERR_INVALID_ARGUMENT',
  'unload a string': 'ERR_INVALID_ARGUMENT',
  'unload an unknown id (idempotent)': 'OK',
  'disposed engine': 'ERR_DISPOSED',
};

test('hostile arguments to every native method give coded errors, never a crash', (t) => {
  const r = runChild('napi');
  exitedNormally(t, r);
  for (const [name, code] of Object.entries(NAPI_CASES)) {
    const l = r.byName.get(name);
    if (!t.truthy(l, `no result for '${name}'`)) continue;
    t.is(l.code, code, `${name}: ${l.message}`);
  }
  t.is(r.lines.length, Object.keys(NAPI_CASES).length);
});
