// One small job on the tiny fixture networks (text encode, condition embedding, a CFG step, a VAE decode),
// run on the main thread by workers.test.mjs and, as a worker_thread, posted back to it.
import path from 'node:path';
import { isMainThread, parentPort } from 'node:worker_threads';
import { Engine } from '../../dist/lib/index.js';
import { model } from './fixtures.mjs';

export async function run() {
  const engine = await Engine.create({ device: 'cpu', threads: 1 });
  try {
    const te = await engine.loadTextEncoder(path.join(model, 'text_encoder'));
    const vae = await engine.loadVae(path.join(model, 'vae'));
    const cn = await engine.loadControlNet(path.join(model, 'controlnet'));
    const unet = await engine.loadUNet(path.join(model, 'unet'));
    const ids = new Int32Array(77).fill(49407);
    ids[0] = 49406;
    ids[1] = 320;
    // An AbortSignal makes every call create a CancelFlag of this thread's addon instance.
    const signal = new AbortController().signal;
    const ctx = (await te.encode(ids, [1, 77], { signal })).lastHiddenState;
    const ctx2 = { shape: [2, 77, 32], data: Float32Array.from([...ctx.data, ...ctx.data]) };
    const image = { shape: [1, 3, 64, 48], data: Float32Array.from({ length: 3 * 64 * 48 }, (_, i) => (Math.sin(i) + 1) / 2) };
    const cond = await cn.condEmbedding(image, { signal });
    const cond2 = { shape: [2, ...cond.shape.slice(1)], data: Float32Array.from([...cond.data, ...cond.data]) };
    const sample = { shape: [2, 4, 8, 6], data: Float32Array.from({ length: 2 * 4 * 8 * 6 }, (_, i) => Math.cos(0.3 * i)) };
    const eps = (await engine.step(cn, unet, { sample, timestep: 701, ctxHigh: ctx2, ctxLow: ctx2, cond: cond2 }, { signal })).noisePred;
    const img = (await vae.decode({ shape: [1, 4, 8, 6], data: eps.data.slice(0, 4 * 8 * 6) }, { signal })).image;
    return { ctx: Array.from(ctx.data), eps: Array.from(eps.data), img: Array.from(img.data) };
  } finally {
    engine.dispose();
  }
}

if (!isMainThread && parentPort) {
  run().then(
    (r) => parentPort.postMessage({ r }),
    (e) => parentPort.postMessage({ e: String(e?.stack ?? e) }),
  );
}
