// The typed engine API on the tiny fixture networks: the plan cache keys on exact parameter values,
// planStep sizes a step without running it, the step takes any number of rows, the per-image constants
// stay on the device, and unload / clearPlans never wait for a running call.
import test from 'ava';
import path from 'node:path';
import { Engine, loadNative } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';

const engine = await Engine.create({ device: 'cpu', threads: 2 });
const cn = await engine.loadControlNet(path.join(model, 'controlnet'));
const unet = await engine.loadUNet(path.join(model, 'unet'));
test.after.always(() => engine.dispose());

/** Deterministic values in [-amp, amp]. */
function ramp(shape, phase, amp = 1) {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = amp * Math.sin(0.37 * i + phase);
  return { shape, data };
}

function stepArgs(rows, h, w, phase = 0) {
  return {
    sample: ramp([rows, 4, h, w], phase),
    timestep: 501,
    ctxHigh: ramp([rows, 77, 32], phase + 1),
    ctxLow: ramp([rows, 77, 32], phase + 2),
    cond: ramp([rows, 16, h, w], phase + 3, 0.5),
  };
}

const rowsOf = (t, r0, count) => {
  const per = t.data.length / t.shape[0];
  return { shape: [count, ...t.shape.slice(1)], data: t.data.slice(r0 * per, (r0 + count) * per) };
};
const catRows = (a, b) => ({ shape: [a.shape[0] + b.shape[0], ...a.shape.slice(1)], data: Float32Array.from([...a.data, ...b.data]) });

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test.serial('conditioning scales that differ past the 6th digit do not share a plan', async (t) => {
  const args = { ...stepArgs(1, 8, 8), cond: undefined, image: ramp([1, 3, 64, 64], 4, 0.5) };
  args.image.data.forEach((v, i) => (args.image.data[i] = v * 0.5 + 0.5));
  const one = await cn.forward({ ...args, conditioningScale: 1 });
  const s = 1.0000001;
  const other = await cn.forward({ ...args, conditioningScale: s });
  t.false(other.stats.planReused, 'a plan built for scale 1 was reused for 1.0000001');
  // The residuals are the unscaled ones times fround(s), exactly.
  const fs = Math.fround(s);
  t.deepEqual(
    Array.from(other.mid.data),
    Array.from(one.mid.data, (v) => Math.fround(v * fs)),
  );
  t.notDeepEqual(Array.from(other.mid.data), Array.from(one.mid.data));
  const again = await cn.forward({ ...args, conditioningScale: s });
  t.true(again.stats.planReused);
  t.deepEqual(Array.from(again.mid.data), Array.from(other.mid.data));
  // Same through the step: two plans, distinct keys.
  const step = stepArgs(2, 8, 8);
  const a = await engine.step(cn, unet, { ...step, conditioningScale: 1 });
  const b = await engine.step(cn, unet, { ...step, conditioningScale: s });
  t.false(b.stats.planReused);
  t.not(maxAbsDiff(a.noisePred.data, b.noisePred.data), 0);
  const keys = engine
    .plans()
    .filter((p) => p.entry === 'step')
    .map((p) => p.key);
  t.is(new Set(keys).size, keys.length);
});

test.serial('planStep sizes a step plan without allocating it, and equals the plan the step then uses', async (t) => {
  engine.clearPlans();
  const planned = await engine.planStep(cn, unet, { batch: 2, height: 12, width: 10 });
  t.false(planned.cached);
  t.true(planned.arenaBytes > 0 && planned.ops > 0 && planned.flops > 0);
  t.is(engine.plans().length, 0, 'planStep must not create (allocate) a plan');
  const r = await engine.step(cn, unet, stepArgs(2, 12, 10));
  t.is(r.stats.arenaBytes, planned.arenaBytes);
  t.is(r.stats.ops, planned.ops);
  const cached = await engine.planStep(cn, unet, { batch: 2, height: 12, width: 10 });
  t.true(cached.cached);
  t.is(cached.key, planned.key);
  const four = await engine.planStep(cn, unet, { batch: 4, height: 12, width: 10 });
  t.true(four.arenaBytes > planned.arenaBytes, 'more rows need more activation memory');
  const err = await t.throwsAsync(engine.planStep(cn, unet, { batch: 0, height: 12, width: 10 }));
  t.is(err.code, 'ERR_INVALID_ARGUMENT');
});

test.serial('a step over two images (4 rows) equals the two steps of one image (2 rows each)', async (t) => {
  const A = stepArgs(2, 8, 6, 0);
  const B = stepArgs(2, 8, 6, 10);
  const both = {};
  for (const k of ['sample', 'ctxHigh', 'ctxLow', 'cond']) both[k] = catRows(A[k], B[k]);
  const r4 = await engine.step(cn, unet, { ...both, timestep: 501 });
  const ra = await engine.step(cn, unet, A);
  const rb = await engine.step(cn, unet, B);
  t.deepEqual(r4.noisePred.shape, [4, 4, 8, 6]);
  const maxRef = Math.max(...ra.noisePred.data.map(Math.abs), ...rb.noisePred.data.map(Math.abs));
  const d = Math.max(maxAbsDiff(rowsOf(r4.noisePred, 0, 2).data, ra.noisePred.data), maxAbsDiff(rowsOf(r4.noisePred, 2, 2).data, rb.noisePred.data));
  t.log(`4 rows vs 2 + 2: max abs diff ${d.toExponential(2)} (max|ref| ${maxRef.toFixed(2)})`);
  t.true(d <= 1e-5 * Math.max(1, maxRef));
});

test.serial('reuseConstants keeps the contexts and the condition on the device', async (t) => {
  const A = stepArgs(2, 6, 6, 0);
  const first = await engine.step(cn, unet, A);
  const sample2 = ramp([2, 4, 6, 6], 7);
  const resent = await engine.step(cn, unet, { ...A, sample: sample2, timestep: 301 });
  // The constants are not sent: garbage of the right shape in their place must not matter.
  const garbage = (x) => ({ shape: x.shape, data: new Float32Array(x.data.length).fill(1e3) });
  const kept = await engine.step(cn, unet, {
    sample: sample2,
    timestep: 301,
    ctxHigh: garbage(A.ctxHigh),
    ctxLow: garbage(A.ctxLow),
    cond: garbage(A.cond),
    reuseConstants: true,
  });
  t.true(kept.stats.planReused);
  t.deepEqual(Array.from(kept.noisePred.data), Array.from(resent.noisePred.data));
  t.notDeepEqual(Array.from(first.noisePred.data), Array.from(resent.noisePred.data));
});

test.serial('unload and clearPlans return at once while a long call runs; the event loop keeps turning', async (t) => {
  const vae = await engine.loadVae(path.join(model, 'vae'), { encoder: false });
  const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  engine.clearPlans();
  const ctl = new AbortController();
  const run = vae.decode({ shape: [1, 4, 160, 160], data: new Float32Array(4 * 160 * 160).fill(0.1) }, { signal: ctl.signal });
  // Wait until the call is inside the engine (its plan exists), so that it holds the engine.
  while (!engine.plans().some((p) => p.entry === 'vae_decode')) await new Promise((r) => setTimeout(r, 5));
  te.unload(); // not in use: freed now
  engine.clearPlans(); // the running call's plan: dropped when the call ends
  vae.unload(); // in use: refused to new calls now, freed when the call ends
  // A timer fires while the decode still computes: aborting it then must cancel it. (Were unload or
  // clearPlans to wait for the call, the decode would have finished before the timer could run.)
  let fired = false;
  setTimeout(() => {
    fired = true;
    ctl.abort();
  }, 0);
  const e = await t.throwsAsync(run);
  t.true(fired);
  t.is(e.code, 'ERR_CANCELLED', e.message);
  t.is(engine.plans().length, 0);
  for (const p of [vae.decode({ shape: [1, 4, 8, 8], data: new Float32Array(256) }), te.encode(new Int32Array(77), [1, 77])]) {
    const err = await t.throwsAsync(p);
    t.is(err.code, 'ERR_INVALID_ARGUMENT');
    t.regex(err.message, /no loaded model/);
  }
  // The engine keeps serving.
  const te2 = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
  t.deepEqual((await te2.encode(new Int32Array(77).fill(49407), [1, 77])).lastHiddenState.shape, [1, 77, 32]);
  te2.unload();
});

test('systemInfo reports how the addon was built: compiler, glibc, compiled CUDA architectures', (t) => {
  const s = loadNative().systemInfo();
  t.regex(s.compiler, /^(g\+\+|clang\+\+|MSVC) \S/);
  if (process.report?.getReport().header.glibcVersionCompiler) t.regex(s.glibc, /^\d+\.\d+$/);
  t.true(Array.isArray(s.cudaArchitectures));
  if (!s.cudaBuilt) t.deepEqual(s.cudaArchitectures, []);
  else for (const a of s.cudaArchitectures) t.regex(a, /^(sm_\d+|PTX compute_\d+)$/);
  t.false('timestepFeatures' in loadNative());
});
