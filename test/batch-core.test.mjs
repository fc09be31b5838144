// Batched pipeline (lib/pipeline/core runCoreBatch): every image of a batch gets what it gets alone:
// the same final latents (within 1e-5) and the same uint8 pixels, on the fixture model and on other
// network configs, with each image's own captions, seed and control image; an image that is cancelled or
// fails leaves the others' results unchanged. Serial: the runs share one engine, as on one XPSR instance.
import test from 'ava';
import path from 'node:path';
import sharp from 'sharp';
import { NoiseSource } from '../dist/lib/noise.js';
import { runCore, runCoreBatch } from '../dist/lib/pipeline/core.js';
import { fixtures } from './helpers/fixtures.mjs';
import { fixturePipeline, otherConfigs, syntheticPipeline } from './helpers/pipelines.mjs';

const fixtureModels = await fixturePipeline();
test.after.always(() => fixtureModels.engine.dispose());

/** A fixture image resized to W x H, as the pipeline's X (HxWx3 uint8). */
async function picture(name, W, H) {
  const rgb = await sharp(path.join(fixtures, 'images', name))
    .removeAlpha()
    .resize(W, H, { fit: 'fill' })
    .raw()
    .toBuffer();
  return { rgb: new Uint8Array(rgb), width: W, height: H };
}

const base = {
  steps: 3,
  guidanceScale: 4.5,
  conditioningScale: 1,
  scheduler: 'ddpm',
  addedPrompt: 'clean, sharp',
  negativePrompt: 'blurry',
  lowLevelGuidance: 'official',
  longPrompts: 'truncate',
  init: 'lr',
  addedNoiseLevel: 800,
  colorFix: 'adain',
  tiling: { mode: 'off', tileSize: 320, overlap: 8, maxLatentPixels: 320 * 320 },
  vaeTiling: 'off',
};

const names = ['coffee_64x48.png', 'chelsea_100x75.png', 'noise_32x24.png', 'rocket_75x100.png'];
const captions = [
  { high: 'a cup of coffee on a table', low: 'slightly blurry' },
  { high: 'a cat', low: 'noisy, low resolution' },
  { high: 'random noise', low: '' },
  { high: 'a rocket on a launch pad', low: 'jpeg artifacts' },
];

async function makeItems(n, W, H, extra = () => ({})) {
  const out = [];
  for (let i = 0; i < n; i++) out.push({ image: await picture(names[i], W, H), prompts: captions[i], seed: 100 + 17 * i, ...extra(i) });
  return out;
}

/** The final latents of a run, taken from the recorded tensors. */
function recorder() {
  const seen = new Map();
  return { record: (name, t) => seen.set(name, t), final: (steps) => seen.get(`step.${steps - 1}.latents_out`).data };
}

async function alone(models, it, o) {
  const rec = recorder();
  const r = await runCore(models, it.image, it.prompts, { ...o, latents: it.latents, noise: new NoiseSource(it.seed), record: rec.record });
  return { result: r, latents: rec.final(o.steps) };
}

async function together(models, items, o, hooks = () => ({})) {
  const recs = items.map(() => recorder());
  const outcomes = await runCoreBatch(
    models,
    items.map((it, i) => ({
      image: it.image,
      prompts: it.prompts,
      latents: it.latents,
      noise: new NoiseSource(it.seed),
      record: recs[i].record,
      ...hooks(i),
    })),
    o,
  );
  return outcomes.map((x, i) => (x.ok ? { ...x, latents: recs[i].final(o.steps) } : x));
}

function maxDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function assertSame(t, batched, single, label) {
  t.true(batched.ok, `${label}: ${batched.error?.message}`);
  const d = maxDiff(batched.latents, single.latents);
  t.true(d <= 1e-5, `${label}: final latents differ by ${d}`);
  t.true(Buffer.from(batched.result.decoded).equals(Buffer.from(single.result.decoded)), `${label}: decoded pixels differ`);
  t.true(Buffer.from(batched.result.image).equals(Buffer.from(single.result.image)), `${label}: colour-fixed pixels differ`);
  t.deepEqual(batched.result.timesteps, single.result.timesteps);
}

async function checkBatchEqualsAlone(t, models, items, o) {
  const singles = [];
  for (const it of items) singles.push(await alone(models, it, o));
  const batched = await together(models, items, o);
  t.is(batched.length, items.length);
  batched.forEach((b, i) => assertSame(t, b, singles[i], `image ${i + 1}`));
  t.is(batched[0].result.batchSize, items.length);
  // different images really give different results (the comparison above is not vacuous)
  t.false(Buffer.from(singles[0].result.image).equals(Buffer.from(singles[1].result.image)));
  return batched;
}

test.serial('fixture model: a batch of 3 gives each image its own result (DDPM, CFG, LR init)', async (t) => {
  await checkBatchEqualsAlone(t, fixtureModels, await makeItems(3, 64, 48), base);
});

test.serial('fixture model: without CFG, UniPC, noise init', async (t) => {
  await checkBatchEqualsAlone(t, fixtureModels, await makeItems(3, 64, 48), { ...base, guidanceScale: 1, scheduler: 'unipc', init: 'noise' });
});

test.serial('fixture model: latent tiling and the tiled VAE, DPM-Solver++', async (t) => {
  const batched = await checkBatchEqualsAlone(t, fixtureModels, await makeItems(2, 64, 48), {
    ...base,
    scheduler: 'dpmpp',
    tiling: { mode: 'on', tileSize: 4, overlap: 1, maxLatentPixels: 320 * 320 },
    vaeTiling: 'on',
  });
  t.deepEqual(batched[0].result.tiled, { tiles: 6, tileSize: 4 });
});

test.serial('fixture model: long prompts of different lengths (chunks) run as separate step groups', async (t) => {
  const long = Array.from({ length: 50 }, (_, i) => `detail${i}`).join(', ');
  const items = await makeItems(3, 64, 48, (i) => (i === 1 ? { prompts: { high: long, low: 'blurry' } } : {}));
  await checkBatchEqualsAlone(t, fixtureModels, items, { ...base, longPrompts: 'chunks' });
});

test.serial('other configs: RRDB ControlNet, low-level UNet blocks, odd non-square latent 9x7', async (t) => {
  const models = await syntheticPipeline(otherConfigs({ rrdb: true, lowlevel: true }));
  try {
    await checkBatchEqualsAlone(t, models, await makeItems(3, 72, 56), base);
  } finally {
    models.engine.dispose();
  }
});

test.serial('other configs: explicit initial latents for one image, batch of 4, DPM-Solver++', async (t) => {
  const models = await syntheticPipeline(otherConfigs());
  try {
    const lat = new NoiseSource(9).normal(4 * 8 * 8);
    const items = await makeItems(4, 64, 64, (i) => (i === 2 ? { latents: lat } : {}));
    await checkBatchEqualsAlone(t, models, items, { ...base, scheduler: 'dpmpp', steps: 2 });
  } finally {
    models.engine.dispose();
  }
});

test.serial('cancelling one image drops only it, at once; the others get their results unchanged', async (t) => {
  const items = await makeItems(3, 64, 48);
  const o = { ...base, steps: 4 };
  const singles = [];
  for (const it of items) singles.push(await alone(fixtureModels, it, o));
  const ctl = new AbortController();
  let droppedAt = null;
  let othersSteps = 0;
  const batched = await together(fixtureModels, items, o, (i) => ({
    signal: i === 1 ? ctl.signal : undefined,
    onProgress: (e) => {
      if (i === 1 && e.stage === 'denoise' && e.step === 2) ctl.abort();
      if (i !== 1 && e.stage === 'denoise') othersSteps++;
    },
    onDropped: i === 1 ? (e) => (droppedAt = { code: e.code, othersSteps }) : undefined,
  }));
  t.false(batched[1].ok);
  t.is(batched[1].error.code, 'ERR_CANCELLED');
  t.is(droppedAt?.code, 'ERR_CANCELLED');
  t.true(droppedAt.othersSteps < 2 * o.steps, 'dropped while the others were still denoising');
  assertSame(t, batched[0], singles[0], 'image 1');
  assertSame(t, batched[2], singles[2], 'image 3');
});

test.serial('an image that fails leaves the others unchanged; cancelling every image cancels the batch', async (t) => {
  const items = await makeItems(3, 64, 48, (i) => (i === 0 ? { latents: new Float32Array(7) } : {}));
  const singles = [null, await alone(fixtureModels, items[1], base), await alone(fixtureModels, items[2], base)];
  const batched = await together(fixtureModels, items, base);
  t.is(batched[0].error.code, 'ERR_SHAPE_MISMATCH');
  assertSame(t, batched[1], singles[1], 'image 2');
  assertSame(t, batched[2], singles[2], 'image 3');

  const ctl = new AbortController();
  const all = await together(fixtureModels, items.slice(1), { ...base, steps: 20 }, () => ({
    signal: ctl.signal,
    onProgress: (e) => e.stage === 'denoise' && e.step === 1 && ctl.abort(),
  }));
  t.deepEqual(
    all.map((x) => x.error?.code),
    ['ERR_CANCELLED', 'ERR_CANCELLED'],
  );
});

test.serial('images of different sizes are refused as one batch', async (t) => {
  const a = await picture(names[0], 64, 48);
  const b = await picture(names[1], 64, 64);
  const e = await t.throwsAsync(
    runCoreBatch(
      fixtureModels,
      [a, b].map((image) => ({ image, prompts: captions[0], noise: new NoiseSource(1) })),
      base,
    ),
  );
  t.is(e.code, 'ERR_INVALID_ARGUMENT');
  t.deepEqual(await runCoreBatch(fixtureModels, [], base), []);
});
