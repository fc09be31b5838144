import test from 'ava';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { readSafetensors } from '../dist/lib/io/safetensors.js';
import { applyGuidance, applyGuidancePair } from '../dist/lib/guidance.js';

const FIX = fileURLToPath(new URL('./fixtures/', import.meta.url));

test('float32 semantics: three separately rounded ops, like torch', (t) => {
  const f = Math.fround;
  const u = Float32Array.from([0.1, -1.25, 3.3, 1e-8]);
  const c = Float32Array.from([0.7, 2.5, -3.3, 1e-8]);
  const g = 7.5;
  const out = applyGuidance(Float32Array.from([...u, ...c]), g);
  t.is(out.length, 4);
  for (let i = 0; i < 4; i++) t.is(out[i], f(u[i] + f(f(g) * f(c[i] - u[i]))));
  // scale 1 returns the conditional prediction, scale 0 the unconditional one
  t.deepEqual(applyGuidancePair(u, c, 1), c);
  t.deepEqual(applyGuidancePair(u, c, 0), u);
  // a case where float32 and float64 evaluation round differently
  const u2 = Float32Array.from([f(0.30000001192092896)]);
  const c2 = Float32Array.from([f(0.7000000476837158)]);
  const a = applyGuidancePair(u2, c2, 4.5)[0];
  const b = applyGuidancePair(u2, c2, 4.5, { precision: 'float64' })[0];
  t.is(b, f(u2[0] + 4.5 * (c2[0] - u2[0])));
  t.true(Math.abs(a - b) <= 2.4e-7);
  const buf = new Float32Array(1);
  t.is(applyGuidancePair(u2, c2, 4.5, { out: buf }), buf);
});

test('matches the pipeline fixture noise_pred_guided (golden float64, g = 4.5)', (t) => {
  const fx = readSafetensors(join(FIX, 'guidance_cases.safetensors'));
  const g = Number(fx.metadata.guidance_scale);
  t.is(g, 4.5);
  for (const step of [0, 3]) {
    const both = fx.tensors.get(`step.${step}.noise_pred_uncond_text`).data;
    const ref = fx.tensors.get(`step.${step}.noise_pred_guided`).data;
    for (const precision of ['float32', 'float64']) {
      const r = applyGuidance(both, g, { precision });
      let abs = 0,
        mx = 0;
      for (let i = 0; i < ref.length; i++) {
        abs = Math.max(abs, Math.abs(r[i] - ref[i]));
        mx = Math.max(mx, Math.abs(ref[i]));
      }
      // inputs are float32 roundings of float64 values, so exact equality is impossible; stay within 1e-6·max|ref|
      t.true(abs <= 1e-6 * Math.max(1, mx), `step ${step} ${precision}: ${abs}`);
      t.log(`step ${step} ${precision}: max abs ${abs.toExponential(2)} (max|ref| ${mx.toFixed(2)})`);
    }
  }
});

test('validation', (t) => {
  t.throws(() => applyGuidance(new Float32Array(3), 2), { message: /2 rows \(even length\)/ });
  t.throws(() => applyGuidancePair(new Float32Array(2), new Float32Array(3), 2), { message: /differ in size/ });
  t.throws(() => applyGuidance(new Float32Array(2), Number.NaN), { message: /finite number/ });
  t.throws(() => applyGuidance(new Float32Array(4), 2, { out: new Float32Array(1) }), { message: /out has 1 values, expected 2/ });
});
