// Batching through the public API (lib/xpsr.ts, lib/batch/*) on the bundled tiny model: upscaleMany's
// batchSize groups images of the same processed size; the dynamic batcher runs concurrent upscale() calls
// of one size as one batch, each call with its own signal, progress and result; 'auto' sizes the batch
// from the planned step memory. Every batched result is compared with the same image run alone (same
// seed, same prompts): the pixels must be identical. Serial: the batches are observed per instance.
import test from 'ava';
import path from 'node:path';
import sharp from 'sharp';
import { XPSR } from '../dist/lib/index.js';
import { fixtures, model } from './helpers/fixtures.mjs';

const img = (name) => path.join(fixtures, 'images', name);
const quick = { steps: 2, processSize: 64, prompts: { high: 'a cup of coffee', low: 'blurry' } };
// three different pictures of one size (32x24 -> processed 128x96), and one of another size
const third = await sharp(img('chelsea_100x75.png')).resize(32, 24, { fit: 'fill' }).png().toBuffer();
const sameSize = [img('coffee_32x24.png'), img('noise_32x24.png'), third];
const otherSize = img('noise_l_19x13.png');

const plain = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
test.after.always(() => plain.dispose());

/** Each input (with its own seed and prompts) run alone, one call at a time, on the unbatched instance. */
async function aloneResults(calls) {
  const out = [];
  for (const [input, options] of calls) out.push(await plain.upscale(input, options));
  return out;
}

const call = (i, input = sameSize[i]) => [input, { ...quick, seed: 11 + i, prompts: { high: `picture ${i}`, low: i % 2 ? 'noisy' : 'blurry' } }];

function samePixels(t, a, b, label) {
  t.is(a.width, b.width, label);
  t.true(a.image.equals(b.image), `${label}: pixels differ from the image run alone`);
}

test.serial('upscaleMany with batchSize runs same-size images together; each equals its run alone', async (t) => {
  const many = await plain.upscaleMany(sameSize, { ...quick, seed: 5, batchSize: 4 });
  const alone = await plain.upscaleMany(sameSize, { ...quick, seed: 5 });
  t.deepEqual(
    many.map((r) => r.ok && r.result.batchSize),
    [3, 3, 3],
  );
  t.deepEqual(
    alone.map((r) => r.ok && r.result.batchSize),
    [1, 1, 1],
  );
  many.forEach((r, i) => samePixels(t, r.result, alone[i].result, `image ${i + 1}`));
  // the images differ from each other, so the comparison is not vacuous
  t.false(many[0].result.image.equals(many[1].result.image));
});

test.serial('upscaleMany: different sizes never share a batch, batchSize caps a batch, a bad image loses nothing', async (t) => {
  const inputs = [sameSize[0], otherSize, Buffer.from('not an image'), sameSize[1], sameSize[2]];
  const rs = await plain.upscaleMany(inputs, { ...quick, seed: 9, batchSize: 2 });
  t.deepEqual(
    rs.map((r) => r.ok),
    [true, true, false, true, true],
  );
  t.is(rs[2].error.code, 'ERR_IMAGE_UNREADABLE');
  t.not(rs[1].result.processed.width, rs[0].result.processed.width);
  t.is(rs[1].result.batchSize, 1); // alone in its size
  // three of one size with batches of at most 2: a batch of 2 and one of 1
  t.deepEqual([rs[0], rs[3], rs[4]].map((r) => r.result.batchSize).sort(), [1, 2, 2]);
  const alone = await plain.upscaleMany(inputs, { ...quick, seed: 9 });
  for (const i of [0, 1, 3, 4]) samePixels(t, rs[i].result, alone[i].result, `input ${i}`);
});

test.serial('concurrent same-size upscale() calls become one batch, each with its own result and progress', async (t) => {
  const calls = [0, 1, 2].map((i) => call(i));
  const alone = await aloneResults(calls);
  const xpsr = await XPSR.load({ model, device: 'cpu', onNotice: () => {}, batching: { maxBatch: 4, maxDelayMs: 500 } });
  t.teardown(() => xpsr.dispose());
  const events = calls.map(() => []);
  const before = xpsr.queueStats().batches;
  const rs = await Promise.all(calls.map(([input, o], i) => xpsr.upscale(input, { ...o, onProgress: (e) => events[i].push(e) })));
  t.is(xpsr.queueStats().batches - before, 1);
  t.deepEqual(
    rs.map((r) => r.batchSize),
    [3, 3, 3],
  );
  rs.forEach((r, i) => {
    samePixels(t, r, alone[i], `call ${i + 1}`);
    t.is(r.seed, 11 + i);
    t.deepEqual(r.prompts, calls[i][1].prompts);
    t.deepEqual(
      events[i].filter((e) => e.stage === 'denoise').map((e) => e.step),
      [1, 2],
      `call ${i + 1} progress`,
    );
  });
});

test.serial('cancelling one call of a running batch drops only that image; the others are byte-identical to alone', async (t) => {
  const calls = [0, 1, 2].map((i) => call(i));
  const alone = await aloneResults([calls[0], calls[2]]);
  const xpsr = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
  t.teardown(() => xpsr.dispose());
  xpsr.setBatching({ maxBatch: 3, maxDelayMs: 500 });
  const ctl = new AbortController();
  const settled = await Promise.allSettled(
    calls.map(([input, o], i) =>
      xpsr.upscale(input, i === 1 ? { ...o, signal: ctl.signal, onProgress: (e) => e.stage === 'denoise' && e.step === 1 && ctl.abort() } : o),
    ),
  );
  t.deepEqual(
    settled.map((s) => s.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  t.is(settled[1].reason.code, 'ERR_CANCELLED');
  t.is(settled[0].value.batchSize, 3); // it ran in the batch of three
  samePixels(t, settled[0].value, alone[0], 'call 1');
  samePixels(t, settled[2].value, alone[1], 'call 3');
});

test.serial('a call cancelled while its batch forms never runs; different sizes run as separate batches', async (t) => {
  const xpsr = await XPSR.load({ model, device: 'cpu', onNotice: () => {}, batching: { maxBatch: 4, maxDelayMs: 300 } });
  t.teardown(() => xpsr.dispose());
  const ctl = new AbortController();
  const [a, b, c, d] = [call(0), call(1), call(2), call(3, otherSize)];
  const promises = [xpsr.upscale(...a), xpsr.upscale(b[0], { ...b[1], signal: ctl.signal }), xpsr.upscale(...c), xpsr.upscale(...d)];
  setTimeout(() => ctl.abort(), 50); // while the batch waits for more calls
  const settled = await Promise.allSettled(promises);
  t.deepEqual(
    settled.map((s) => s.status),
    ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
  );
  t.is(settled[1].reason.code, 'ERR_CANCELLED');
  t.is(settled[0].value.batchSize, 2);
  t.is(settled[2].value.batchSize, 2);
  t.is(settled[3].value.batchSize, 1);
  t.deepEqual(xpsr.queueStats(), { pending: 0, ready: 0, running: 0, batches: 2, calls: 3 });
  const alone = await aloneResults([a, c, d]);
  samePixels(t, settled[0].value, alone[0], 'call 1');
  samePixels(t, settled[2].value, alone[1], 'call 3');
  samePixels(t, settled[3].value, alone[2], 'call 4 (other size)');
});

test.serial("batchSize 'auto' takes the largest batch whose planned step fits the budget; a clear error when none does", async (t) => {
  // The fixture model plans about 0.5 MiB of step activations per image at this size (latent 12x16, CFG):
  // the planned bytes grow with the batch, so a budget between 2 and 3 images' worth allows 2.
  const { Engine } = await import('../dist/lib/engine/engine.js');
  const engine = await Engine.create({ device: 'cpu' });
  const unet = await engine.loadUNet(path.join(model, 'unet'));
  const controlnet = await engine.loadControlNet(path.join(model, 'controlnet'));
  const bytes = [];
  for (const b of [1, 2, 3]) bytes.push((await engine.planStep(controlnet, unet, { batch: 2 * b, height: 12, width: 16 })).arenaBytes);
  engine.dispose();
  t.true(bytes[0] < bytes[1] && bytes[1] < bytes[2]);
  const budgetMB = (bytes[1] + bytes[2]) / 2 / 2 ** 20;
  const rs = await plain.upscaleMany(sameSize, { ...quick, seed: 3, batchSize: 'auto', memoryBudgetMB: budgetMB });
  t.deepEqual(rs.map((r) => r.ok && r.result.batchSize).sort(), [1, 2, 2]);
  const roomy = await plain.upscaleMany(sameSize, { ...quick, seed: 3, batchSize: 'auto', memoryBudgetMB: 1024 });
  t.deepEqual(
    roomy.map((r) => r.ok && r.result.batchSize),
    [3, 3, 3],
  );
  roomy.forEach((r, i) => samePixels(t, r.result, rs[i].result, `image ${i + 1}`));
  const tiny = await plain.upscaleMany(sameSize.slice(0, 1), { ...quick, batchSize: 'auto', memoryBudgetMB: bytes[0] / 2 / 2 ** 20 });
  t.false(tiny[0].ok);
  t.is(tiny[0].error.code, 'ERR_OUT_OF_MEMORY');
  t.regex(tiny[0].error.message, /batchSize 'auto'.*over the memory budget/);
});

test.serial('batching options are validated with clear coded errors', async (t) => {
  for (const [o, name] of [
    [{ batchSize: 0 }, 'batchSize'],
    [{ batchSize: 'big' }, 'batchSize'],
    [{ batchSize: 65 }, 'batchSize'],
    [{ memoryBudgetMB: -1 }, 'memoryBudgetMB'],
  ]) {
    const e = await t.throwsAsync(plain.upscaleMany(sameSize, { ...quick, ...o }));
    t.is(e.code, 'ERR_INVALID_OPTION');
    t.true(e.message.includes(`'${name}'`), e.message);
  }
  for (const [b, name] of [
    [{ maxBatch: 1.5 }, 'batching.maxBatch'],
    [{ maxDelayMs: -1 }, 'batching.maxDelayMs'],
    ['fast', 'batching'],
  ]) {
    const e = t.throws(() => plain.setBatching(b));
    t.is(e.code, 'ERR_INVALID_OPTION');
    t.true(e.message.includes(`'${name}'`), e.message);
  }
  const e = await t.throwsAsync(XPSR.load({ model, device: 'cpu', batching: { maxBatch: 0 } }));
  t.is(e.code, 'ERR_INVALID_OPTION');
  t.deepEqual(plain.batching, { maxBatch: 1, maxDelayMs: 0 });
});
