import test from 'ava';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { readSafetensors, toNumbers } from '../dist/lib/io/safetensors.js';
import {
  createScheduler,
  loadSchedulerConfig,
  SCHEDULER_NAMES,
  makeNoiseSchedule,
  torchLinspaceF32,
  fma32,
  parseSchedulerConfig,
  parsePythonJson,
  checkSchedulerConfig,
  SD15_SCHEDULER_CONFIG,
  DDPMScheduler,
  DPMSolverMultistepScheduler,
  UniPCMultistepScheduler,
} from '../dist/lib/schedulers/index.js';
import { torchExpF32 } from '../dist/lib/schedulers/torchmath.js';
import { solveF32 } from '../dist/lib/schedulers/unipc.js';
import { ReplayNoise, NoiseSource } from '../dist/lib/noise.js';

const FIX = fileURLToPath(new URL('./fixtures/', import.meta.url));
const load = (name) => readSafetensors(join(FIX, name));
/** Python json writes -Infinity; JSON.parse does not accept it. */
const parseInfo = (s) => JSON.parse(s.replace(/-Infinity/g, 'null'));

/** max |a − b| and that divided by max |b|. */
function err(a, b) {
  let m = 0,
    ref = 0,
    neq = 0;
  for (let i = 0; i < b.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]));
    ref = Math.max(ref, Math.abs(b[i]));
    if (a[i] !== b[i]) neq++;
  }
  return { abs: m, rel: m / Math.max(ref, 1e-30), neq };
}

const ddpmFix = load('scheduler_ddpm.safetensors');
const D = (k) => ddpmFix.tensors.get(k).data;

test('betas and alphas_cumprod match the fixture bit-exactly (torch float32 linspace + float64-accumulated cumprod)', (t) => {
  const cfg = loadSchedulerConfig(join(FIX, 'model'));
  const s = createScheduler('ddpm', cfg);
  t.deepEqual(s.betas, D('betas'));
  t.deepEqual(s.alphasCumprod, D('alphas_cumprod'));
  // docs/architecture.md §7.5 reference values
  t.is(s.alphasCumprod[0], Math.fround(0.99915));
  t.is(s.alphasCumprod[999], Math.fround(0.00466009602));
  t.is(s.alphasCumprod[800], Math.fround(0.036869593));
});

test('fma32 is a single-rounding float32 fma; linspace edge cases', (t) => {
  const f = Math.fround;
  t.is(fma32(f(1.5), f(2), f(0.25)), 3.25);
  // a product whose float64 sum lands exactly on a float32 midpoint must still round by the residual
  const a = f(1 + 2 ** -12),
    b = f(1 + 2 ** -12); // a*b = 1 + 2^-11 + 2^-24 exactly
  t.is(fma32(a, b, f(2 ** -60)), f(1 + 2 ** -11 + 2 ** -23));
  t.is(fma32(a, b, -f(2 ** -60)), f(1 + 2 ** -11));
  t.deepEqual(Array.from(torchLinspaceF32(0, 1, 1)), [0]);
  t.deepEqual(Array.from(torchLinspaceF32(0, 4, 5)), [0, 1, 2, 3, 4]);
  const big = torchLinspaceF32(-3, 7, 37);
  t.is(big[0], -3);
  t.is(big[36], 7);
  for (let i = 1; i < 37; i++) t.true(big[i] > big[i - 1]);
  const lin = makeNoiseSchedule({ beta_schedule: 'linear', beta_start: 1e-4, beta_end: 0.02 });
  t.is(lin.betas[0], Math.fround(1e-4));
  t.is(lin.betas[999], Math.fround(0.02));
  const cos = makeNoiseSchedule({ beta_schedule: 'squaredcos_cap_v2' });
  t.true(cos.betas[999] <= Math.fround(0.999) && cos.betas[0] > 0);
  t.throws(() => makeNoiseSchedule({ beta_schedule: 'sigmoid' }), { message: /beta_schedule "sigmoid" is not supported/ });
  t.throws(() => makeNoiseSchedule({ trained_betas: [0.1, 0.2], num_train_timesteps: 1000 }), { message: /trained_betas has 2 values/ });
});

test('torchExpF32 (SLEEF expf) is within 1 ulp of the correctly rounded exp', (t) => {
  let maxUlp = 0;
  for (let i = 0; i < 20000; i++) {
    const x = Math.fround(-20 + 40 * (i / 20000));
    const e = torchExpF32(x);
    const r = Math.fround(Math.exp(x));
    const ulp = Math.abs(Math.fround(r * (1 + 2 ** -23)) - r) || 2 ** -149;
    maxUlp = Math.max(maxUlp, Math.abs(e - r) / ulp);
  }
  t.true(maxUlp <= 1, `max ${maxUlp} ulp`);
  t.is(torchExpF32(0), 1);
  t.is(torchExpF32(-200), 0);
  t.is(torchExpF32(1e39), Infinity);
  // the value the DPM fixture needs: exp(-h) for the first 20-step DPM-Solver++ step differs from Math.exp by 1 ulp
  t.is(torchExpF32(-0.29287242889404297), 0.746117353439331);
});

test('DDPM timesteps (leading + steps_offset) match the fixture; linspace and trailing as diffusers', (t) => {
  const s = createScheduler('ddpm', loadSchedulerConfig(join(FIX, 'model')));
  for (const n of [4, 5, 20, 50]) t.deepEqual(s.setTimesteps(n), toNumbers(ddpmFix.tensors.get(`timesteps_${n}`)), `n=${n}`);
  t.deepEqual(s.timesteps, toNumbers(ddpmFix.tensors.get('timesteps_50')), 'getter returns the current schedule');
  const lin = new DDPMScheduler({ timestep_spacing: 'linspace' });
  t.deepEqual(lin.setTimesteps(4), [999, 666, 333, 0]);
  t.deepEqual(lin.setTimesteps(6), [999, 799, 599, 400, 200, 0]); // 399.6→400, 599.4→599 (round half even elsewhere)
  const tr = new DDPMScheduler({ timestep_spacing: 'trailing' });
  t.deepEqual(tr.setTimesteps(4), [999, 749, 499, 249]);
  t.deepEqual(tr.setTimesteps(3), [999, 666, 332]);
  t.throws(() => s.setTimesteps(0), { message: /num_inference_steps must be an integer in \[1, 1000\]/ });
  t.throws(() => s.setTimesteps(1001));
});

test('DDPM single steps match scheduler_ddpm.safetensors (prev_sample and pred_original_sample)', (t) => {
  const info = parseInfo(ddpmFix.metadata.info);
  const s = createScheduler('ddpm', info.config);
  const report = [];
  for (const c of info.step_cases) {
    s.setTimesteps(c.num_inference_steps);
    const k = `step${c.index}`;
    const r = s.step(D(`${k}.model_output`), c.timestep, D(`${k}.sample`), D(`${k}.noise`));
    const e1 = err(r.prevSample, D(`${k}.prev_sample`));
    const e2 = err(r.predOriginalSample, D(`${k}.pred_original_sample`));
    report.push(`t=${c.timestep}: prev ${e1.abs.toExponential(2)} (${e1.neq} differ), x0 ${e2.abs.toExponential(2)}`);
    t.true(e1.rel <= 1e-6, `${k} prev rel ${e1.rel}`);
    t.true(e2.rel <= 1e-6, `${k} x0 rel ${e2.rel}`);
  }
  t.log(report.join('; '));
});

test('DDPM draws exactly one noise tensor per step while t > 0, including the final t = 1 step', (t) => {
  const s = createScheduler('ddpm', loadSchedulerConfig(join(FIX, 'model')));
  const ts = s.setTimesteps(4);
  const n = 120;
  const draws = Array.from({ length: 4 }, (_, i) => new NoiseSource(7, i).normal(n));
  const replay = new ReplayNoise(draws, 'ddpm-test');
  let x = new NoiseSource(1).normal(n);
  for (const tt of ts) x = s.step(new NoiseSource(2, tt).normal(n), tt, x, replay).prevSample;
  t.is(replay.consumed, 4);
  replay.assertExhausted();
  // the last step (t=1, prev=-49) uses alpha_prev = 1 and std = sqrt(1e-20) = 1e-10: noise barely matters
  const x0 = new Float32Array(n).fill(0.5);
  const eps = new Float32Array(n).fill(0.1);
  const a = s.step(eps, 1, x0, new Float32Array(n).fill(1)).prevSample;
  const b = s.step(eps, 1, x0, new Float32Array(n).fill(-1)).prevSample;
  t.true(Math.abs(a[0] - b[0]) < 1e-9);
  // no draw at t = 0 (linspace schedules end at 0)
  const lin = new DDPMScheduler({ timestep_spacing: 'linspace', clip_sample: false });
  lin.setTimesteps(4);
  const r = new ReplayNoise([], 'empty');
  t.notThrows(() => lin.step(eps, 0, x0, r));
  t.is(r.consumed, 0);
  t.throws(() => s.step(eps, 951, x0), { message: /needs Gaussian noise/ });
  t.throws(() => s.step(eps, 951, x0, new Float32Array(3)), { message: /noise has 3 values, the sample has 120/ });
  t.throws(() => s.step(eps, 1000, x0, new Float32Array(n)), { message: /timestep must be an integer in \[0, 999\]/ });
});

test('DDPM prediction types, clipping, variance types and rejected options', (t) => {
  const base = { beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, steps_offset: 1, clip_sample: false };
  const x = Float32Array.from({ length: 8 }, (_, i) => i / 4 - 1);
  const out = Float32Array.from({ length: 8 }, (_, i) => 0.3 - i / 10);
  const z = new Float32Array(8);
  const eps = new DDPMScheduler({ ...base });
  eps.setTimesteps(20);
  const ac = eps.alphasCumprod[501];
  // v-prediction: x0 = sqrt(a)·x − sqrt(1−a)·v
  const v = new DDPMScheduler({ ...base, prediction_type: 'v_prediction' });
  v.setTimesteps(20);
  const rv = v.step(out, 501, x, z);
  const f = Math.fround;
  t.true(Math.abs(rv.predOriginalSample[3] - (f(Math.sqrt(ac)) * x[3] - f(Math.sqrt(f(1 - ac))) * out[3])) < 1e-7);
  const smp = new DDPMScheduler({ ...base, prediction_type: 'sample' });
  smp.setTimesteps(20);
  t.deepEqual(smp.step(out, 501, x, z).predOriginalSample, out);
  const clip = new DDPMScheduler({ ...base, clip_sample: true, clip_sample_range: 0.5, prediction_type: 'sample' });
  clip.setTimesteps(20);
  t.true(
    clip.step(Float32Array.from([3, -3]), 501, Float32Array.from([0, 0]), new Float32Array(2)).predOriginalSample.every((q) => Math.abs(q) === 0.5),
  );
  for (const vt of ['fixed_small_log', 'fixed_large']) {
    const s = new DDPMScheduler({ ...base, variance_type: vt });
    s.setTimesteps(20);
    const a = s.step(out, 501, x, new Float32Array(8).fill(1)).prevSample;
    const b = s.step(out, 501, x, new Float32Array(8)).prevSample;
    t.true(a[0] - b[0] > 0.1, vt);
  }
  t.throws(() => new DDPMScheduler({ variance_type: 'learned_range' }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => new DDPMScheduler({ prediction_type: 'x0' }), { message: /prediction_type "x0" is not supported/ });
  t.throws(() => new DDPMScheduler({ thresholding: true }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => new DDPMScheduler({ timestep_spacing: 'karras' }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => new DDPMScheduler({ steps_offset: 'one' }), { message: /'steps_offset' must be an integer/ });
});

test('add_noise matches the fixture for t in {0, 1, 500, 800, 951, 999}', (t) => {
  const s = createScheduler('ddpm', loadSchedulerConfig(join(FIX, 'model')));
  const report = [];
  for (const tt of [0, 1, 500, 800, 951, 999]) {
    const r = s.addNoise(D('add_noise.original'), D('add_noise.noise'), tt);
    const e = err(r, D(`add_noise.t${tt}`));
    report.push(`t=${tt}: ${e.abs.toExponential(2)}`);
    t.true(e.rel <= 1e-6);
  }
  t.log(report.join(', '));
  t.throws(() => s.addNoise(new Float32Array(2), new Float32Array(3), 5), { message: /original has 2 values but noise has 3/ });
});

for (const [file, name, Cls] of [
  ['scheduler_dpmsolver_multistep.safetensors', 'dpmpp', DPMSolverMultistepScheduler],
  ['scheduler_unipc_multistep.safetensors', 'unipc', UniPCMultistepScheduler],
]) {
  test(`${name}: timesteps and 5 chained steps of a 20-step run match ${file}`, (t) => {
    const fx = load(file);
    const G = (k) => fx.tensors.get(k).data;
    const info = parseInfo(fx.metadata.info);
    const s = createScheduler(name, info.config);
    t.true(s instanceof Cls);
    t.deepEqual(s.setTimesteps(50), toNumbers(fx.tensors.get('timesteps_50')));
    const ts = s.setTimesteps(info.num_inference_steps);
    t.deepEqual(ts, toNumbers(fx.tensors.get('timesteps_20')));
    t.deepEqual(ts.slice(0, 12), [999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450]);
    let x = G('sample.0');
    const report = [];
    for (let i = 0; i < info.steps_run; i++) {
      x = s.step(G(`model_output.${i}`), ts[i], x).prevSample;
      const e = err(x, G(`sample.${i + 1}`));
      report.push(`step ${i}: ${e.abs.toExponential(2)} (${e.neq} differ)`);
      t.true(e.rel <= 1e-6, `step ${i} rel ${e.rel}`);
    }
    t.log(report.join('; '));
    // reset() + replay gives the same trajectory
    s.reset();
    let y = G('sample.0');
    for (let i = 0; i < info.steps_run; i++) y = s.step(G(`model_output.${i}`), ts[i], y).prevSample;
    t.deepEqual(y, x);
    t.throws(() => s.step(G('model_output.0'), 998, G('sample.0')), { message: /timestep 998 is not in the schedule/ });
  });

  test(`${name}: full runs stay finite for several orders / step counts (lower_order_final path)`, (t) => {
    for (const order of [1, 2, 3]) {
      for (const steps of [1, 4, 10, 25]) {
        const s = createScheduler(name, { beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, solver_order: order });
        const ts = s.setTimesteps(steps);
        t.is(ts.length, steps);
        const src = new NoiseSource(11, order * 100 + steps);
        let x = src.normal(64);
        const ac = s.alphasCumprod;
        // the probability-flow ODE with a constant x0 keeps n = (x − √ᾱ·x0)/√(1−ᾱ) fixed
        const n0 = x.map((v) => (v - Math.sqrt(ac[ts[0]]) * 0.5) / Math.sqrt(1 - ac[ts[0]]));
        for (const tt of ts) {
          // an "ideal" epsilon model for x0 = 0.5: eps = (x - sqrt(a)·x0)/sqrt(1-a)
          const a = s.alphasCumprod[tt];
          const eps = x.map((v) => (v - Math.sqrt(a) * 0.5) / Math.sqrt(1 - a));
          x = s.step(eps, tt, x).prevSample;
        }
        t.true(x.every(Number.isFinite), `${name} order ${order} steps ${steps}`);
        // with an exact epsilon model the solvers follow the ODE exactly (up to rounding) down to t = 0
        let worst = 0;
        x.forEach((v, i) => {
          worst = Math.max(worst, Math.abs(v - (Math.sqrt(ac[0]) * 0.5 + Math.sqrt(1 - ac[0]) * n0[i])));
        });
        t.true(worst < 1e-4, `${name} order ${order} steps ${steps}: ${worst}`);
      }
    }
  });
}

test('DPM-Solver++ heun and spacing options; UniPC bh1 / predict_x0=false / disable_corrector', (t) => {
  const base = { beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012 };
  const lead = new DPMSolverMultistepScheduler({ ...base, timestep_spacing: 'leading', steps_offset: 1 });
  t.deepEqual(lead.setTimesteps(4), [801, 601, 401, 201]);
  const trail = new UniPCMultistepScheduler({ ...base, timestep_spacing: 'trailing' });
  t.deepEqual(trail.setTimesteps(4), [999, 749, 499, 249]);
  for (const cfg of [
    ['dpmpp', { solver_type: 'heun' }],
    ['dpmpp', { solver_type: 'bh2' }],
    ['unipc', { solver_type: 'bh1' }],
    ['unipc', { predict_x0: false }],
    ['unipc', { disable_corrector: [0, 1] }],
    ['dpmpp', { prediction_type: 'v_prediction' }],
  ]) {
    const s = createScheduler(cfg[0], { ...base, ...cfg[1] });
    let x = new NoiseSource(3).normal(16);
    for (const tt of s.setTimesteps(8)) x = s.step(new Float32Array(16).fill(0.1), tt, x).prevSample;
    t.true(x.every(Number.isFinite), JSON.stringify(cfg));
  }
  t.throws(() => createScheduler('dpmpp', { algorithm_type: 'sde-dpmsolver++' }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => createScheduler('dpmpp', { use_karras_sigmas: true }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => createScheduler('unipc', { solver_type: 'bh3' }), { code: 'ERR_UNSUPPORTED' });
  t.throws(() => createScheduler('unipc').step(new Float32Array(1), 1, new Float32Array(1)), { message: /call setTimesteps\(\) first/ });
});

test('solveF32 agrees with a float64 solve', (t) => {
  const src = new NoiseSource(5);
  for (let k = 0; k < 50; k++) {
    const n = 2 + (k % 3);
    const z = src.normal(n * n + n);
    const A = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => Math.fround(z[i * n + j] + (i === j ? 3 : 0))));
    const b = Array.from(z.subarray(n * n));
    const x = solveF32(A, b);
    for (let i = 0; i < n; i++) {
      const r = A[i].reduce((s, a, j) => s + a * x[j], 0) - b[i];
      t.true(Math.abs(r) < 1e-5, `residual ${r}`);
    }
  }
  t.throws(
    () =>
      solveF32(
        [
          [0, 0],
          [0, 0],
        ],
        [1, 1],
      ),
    { message: /singular/ },
  );
});

test('registry, aliases and config loading', (t) => {
  t.deepEqual([...SCHEDULER_NAMES].sort(), ['ddpm', 'dpm-solver++', 'dpmpp', 'dpmsolver++', 'dpmsolvermultistep', 'unipc']);
  for (const [n, cls] of [
    ['ddpm', DDPMScheduler],
    ['DPMPP', DPMSolverMultistepScheduler],
    ['dpmsolver++', DPMSolverMultistepScheduler],
    ['dpm-solver++', DPMSolverMultistepScheduler],
    ['unipc', UniPCMultistepScheduler],
  ]) {
    t.true(createScheduler(n) instanceof cls, n);
  }
  const e = t.throws(() => createScheduler('euler'), { message: /Unknown scheduler "euler"/ });
  t.is(e.code, 'ERR_INVALID_OPTION');
  const fromModel = loadSchedulerConfig(join(FIX, 'model'));
  const fromDir = loadSchedulerConfig(join(FIX, 'model', 'scheduler'));
  const fromFile = loadSchedulerConfig(join(FIX, 'model', 'scheduler', 'scheduler_config.json'));
  t.deepEqual(fromModel, fromDir);
  t.deepEqual(fromModel, fromFile);
  t.is(fromModel._class_name, 'DDPMScheduler');
  const s = createScheduler('ddpm', fromModel);
  t.is(s.name, 'ddpm');
  t.is(s.initNoiseSigma, 1);
  t.is(s.config.timestep_spacing, 'leading');
  const x = new Float32Array(4);
  t.is(s.scaleModelInput(x, 951), x);
  // a saved config's explicit timestep_spacing carries over to other schedulers (diffusers from_config behaviour)
  t.deepEqual(createScheduler('dpmpp', fromModel).setTimesteps(4), [801, 601, 401, 201]);
  t.deepEqual(createScheduler('dpmpp', { ...fromModel, timestep_spacing: 'linspace' }).setTimesteps(4), [999, 749, 500, 250]);
  // keys in _use_default_values are dropped (the new class uses its own defaults)
  t.deepEqual(createScheduler('unipc', { ...fromModel, _use_default_values: ['timestep_spacing'] }).setTimesteps(4), [999, 749, 500, 250]);
  const miss = t.throws(() => loadSchedulerConfig(join(FIX, 'nope')));
  t.is(miss.code, 'ERR_IO');
});

test('one config reader: NaN, infinities and absurd values are refused with the file and the key', (t) => {
  const src = 'scheduler_config.json';
  const bad = (text) => t.throws(() => checkSchedulerConfig(parseSchedulerConfig(text, src), src));
  for (const [text, msg] of [
    ['{"beta_start": NaN}', /'beta_start' holds NaN or Infinity/],
    ['{"beta_end": Infinity}', /'beta_end' holds NaN or Infinity/],
    ['{"trained_betas": [0.1, NaN]}', /'trained_betas' holds NaN/],
    ['{"beta_start": 2, "beta_end": 3}', /beta_start must be a number between 0 and 1/],
    ['{"beta_start": "0.1"}', /beta_start must be a number between 0 and 1/],
    ['{"num_train_timesteps": 1e12}', /num_train_timesteps must be an integer between 2 and 100000/],
    ['{"num_train_timesteps": 0}', /num_train_timesteps/],
    ['{"steps_offset": -5}', /steps_offset/],
    ['{"steps_offset": 5000}', /steps_offset/],
    ['{"clip_sample_range": 0}', /clip_sample_range/],
    ['{"trained_betas": "x"}', /trained_betas must be an array/],
    ['[1, 2]', /not a JSON object/],
    ['{"beta_start": 0.1,', /not valid JSON/],
  ]) {
    const e = bad(text);
    t.is(e.code, 'ERR_WEIGHTS_INVALID', text);
    t.regex(e.message, msg, text);
    t.true(e.message.startsWith(src), text);
  }
  // -Infinity is what diffusers writes for DPM-Solver's lambda_min_clipped: accepted there only
  const ok = parseSchedulerConfig('{"lambda_min_clipped": -Infinity, "beta_schedule": "scaled_linear"}', src);
  t.is(ok.lambda_min_clipped, -Infinity);
  t.notThrows(() => checkSchedulerConfig(ok, src));
  t.is(parsePythonJson('{"a": [NaN, -Infinity]}').a[1], -Infinity);
});

test('the SD-1.5 default config passes the same checks as a file', (t) => {
  t.notThrows(() => checkSchedulerConfig({ ...SD15_SCHEDULER_CONFIG }, 'built-in'));
  t.deepEqual(
    createScheduler('ddpm', { ...SD15_SCHEDULER_CONFIG })
      .setTimesteps(20)
      .slice(0, 2),
    [951, 901],
  );
});

test('DDPM with SD-1.5 settings refuses a step count that would reach past the last timestep, naming steps', (t) => {
  const s = createScheduler('ddpm', {
    num_train_timesteps: 1000,
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    steps_offset: 1,
  });
  const e = t.throws(() => s.setTimesteps(1000));
  t.is(e.code, 'ERR_INVALID_OPTION');
  t.regex(e.message, /'steps': expected at most 999/);
  const ts = s.setTimesteps(999);
  t.is(ts[0], 999);
  t.is(ts.at(-1), 1);
});
