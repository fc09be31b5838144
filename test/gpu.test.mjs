// GPU path through the public API. Runs only where a CUDA device is usable; elsewhere each test is skipped
// with the reason in its title (the native CUDA tests, scripts/gpu-check.sh, cover hosts without Node).
import test from 'ava';
import path from 'node:path';
import { loadNative } from '../dist/lib/native.js';
import { runParity } from '../dist/lib/parity/index.js';
import { XPSR } from '../dist/lib/index.js';
import { fixtures, model } from './helpers/fixtures.mjs';

const devices = loadNative().listDevices();
const gpu = devices.cuda.length > 0;
const reason = gpu ? '' : ` [skipped: no CUDA device: ${devices.reason}]`;
const gpuTest = gpu ? test.serial : test.skip;

gpuTest(`every network fixture reproduces through the CUDA backend within the fp16 tolerance${reason}`, async (t) => {
  const only = ['text_encoder', 'vae_encoder', 'vae_decoder', 'controlnet', 'unet', 'unet_lowlevel_variant'];
  const r = await runParity(fixtures, { device: 'cuda', only });
  t.deepEqual(
    r.lines.filter((l) => !l.pass).map((l) => `${l.component} ${l.tensor} ${l.maxAbs} > ${l.tol}`),
    [],
  );
  t.true(r.passed > 150);
});

gpuTest(`upscale on CUDA is close to upscale on the CPU${reason}`, async (t) => {
  const opts = { steps: 4, seed: 2, processSize: 128, prompts: { high: 'a cup of coffee', low: 'blurry' } };
  const image = path.join(fixtures, 'images', 'coffee_64x48.png');
  const cpu = await XPSR.load({ model, device: 'cpu' });
  const cuda = await XPSR.load({ model, device: 'cuda' });
  const a = await cpu.upscale(image, opts);
  const b = await cuda.upscale(image, opts);
  let sum = 0;
  for (let i = 0; i < a.image.length; i++) sum += Math.abs(a.image[i] - b.image[i]);
  const mean = sum / a.image.length;
  t.log(`mean |cpu - cuda| = ${mean.toFixed(3)} (uint8)`);
  t.true(mean < 3, `mean uint8 difference ${mean}`);
  await cpu.dispose();
  await cuda.dispose();
});

test(`device 'auto' picks ${gpu ? 'CUDA' : 'the CPU with a notice'}`, async (t) => {
  const notices = [];
  const x = await XPSR.load({ model, device: 'auto', onNotice: (m) => notices.push(m) });
  if (gpu) t.regex(x.device, /^cuda/);
  else {
    t.is(x.device, 'cpu');
    t.true(
      notices.some((m) => /CPU/.test(m)),
      notices.join('\n'),
    );
  }
  await x.dispose();
});
