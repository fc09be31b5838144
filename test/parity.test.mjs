// Parity with the golden outputs of the official implementation (test/fixtures), through the public
// TypeScript API: every network, the tokenizer, the schedulers, the colour fix and both full pipelines.
import test from 'ava';
import { formatLine, runParity } from '../dist/lib/parity/index.js';
import { fixtures } from './helpers/fixtures.mjs';
import { ensureSingleFileFixtures } from './helpers/single-file-fixtures.mjs';

ensureSingleFileFixtures(); // single_file/*: assembled from recipes (see its README)
const report = runParity(fixtures, { device: 'cpu' });

const expected = {
  text_encoder: 4,
  vae_encoder: 8,
  vae_decoder: 6,
  controlnet: 54 /* + 6 training-only heads, SKIP */,
  unet: 54,
  unet_lowlevel_variant: 74,
  tokenizer: 46,
  scheduler_ddpm: 20,
  scheduler_dpmsolver: 7,
  scheduler_unipc: 7,
  colorfix: 4,
  pipeline_default: 45,
  pipeline_latents_input: 40,
  ...Object.fromEntries(
    ['single_file_fp32', 'single_file_ckpt', 'single_file_fp16'].flatMap((f) =>
      [
        ['text_encoder', 4],
        ['vae_encoder', 8],
        ['vae_decoder', 6],
      ].map(([n, min]) => [`${f}/${n}`, min]),
    ),
  ),
};

for (const [component, min] of Object.entries(expected)) {
  test(`${component} matches the official outputs`, async (t) => {
    const r = await report;
    const lines = r.lines.filter((l) => l.component === component && !l.skipped);
    const failures = lines.filter((l) => !l.pass);
    t.true(lines.length >= min, `only ${lines.length} tensors compared for ${component}`);
    t.deepEqual(
      failures.map((l) => `${l.tensor}: max_abs ${l.maxAbs} > tol ${l.tol} ${l.note ?? ''}`),
      [],
    );
  });
}

test('the whole parity run passes and skips nothing', async (t) => {
  const r = await report;
  t.is(r.failed, 0);
  t.deepEqual(r.skipped, []);
});

test('training-only heads are listed as SKIP and counted apart, never as passed', async (t) => {
  const r = await report;
  const skipped = r.lines.filter((l) => l.skipped);
  t.true(skipped.length > 0 && skipped.every((l) => l.component === 'controlnet' && /training-only/.test(l.note)));
  t.true(skipped.some((l) => l.tensor.startsWith('controlnet_cond_rgbs.')));
  t.is(r.notComputed, skipped.length);
  t.is(r.passed + r.failed, r.lines.length - skipped.length);
  t.regex(formatLine(skipped[0]), /^SKIP {2}controlnet/);
});

test('network outputs are within the float32 tolerance, not just the pipeline one', async (t) => {
  const r = await report;
  const worst = Math.max(
    ...r.lines.filter((l) => ['unet', 'controlnet', 'text_encoder'].includes(l.component) && !l.note && !l.skipped).map((l) => l.maxRel),
  );
  t.true(worst < 1e-4, `worst max_abs/max|ref| ${worst}`);
});
