// A worker_threads body for test/captioner-addon.test.mjs: loads the captioner addon in its own Node.js
// environment, captions with a tiny random LLaVA pair while another worker does the same, and reports what
// its environment holds (envInfo) at each step.
import { parentPort, workerData } from 'node:worker_threads';

const { model, mmproj, image, instructions, barrier, workers, dist } = workerData;
const { LlavaCaptioner } = await import(`${dist}/captioners/llava.js`);
const { loadCaptionerAddon } = await import(`${dist}/captioners/native.js`);

/** Waits until `n` workers have arrived at the barrier (bounded: a stuck peer fails the test, not hangs it). */
function arriveAndWait(n) {
  Atomics.add(barrier, 0, 1);
  Atomics.notify(barrier, 0);
  const deadline = Date.now() + 60_000;
  for (let v; (v = Atomics.load(barrier, 0)) < n; ) {
    if (Date.now() > deadline) throw new Error(`barrier: ${v} of ${n} workers arrived`);
    Atomics.wait(barrier, 0, v, 100);
  }
}

const c = await LlavaCaptioner.create({ model, mmproj, maxTokens: 10, threads: 1 });
const addon = loadCaptionerAddon(c.variant);
arriveAndWait(workers); // every worker holds a loaded model now
const whileBothLoaded = addon.envInfo();
const captions = await c.caption(image, instructions);
await c.dispose();
const afterDispose = addon.envInfo();
parentPort.postMessage({ whileBothLoaded, captions, afterDispose });

// Second phase (asked by the test once another worker has exited): a model dropped without dispose() is
// freed by its finalizer in this environment, whatever happened to the other environments.
const phase = await new Promise((resolve) => parentPort.once('message', resolve));
if (phase === 'gc') {
  let m = new addon.CaptionerModel();
  await m.load({
    modelPath: model,
    mmprojPath: mmproj,
    contextSize: 256,
    batchSize: 64,
    threads: 1,
    gpuLayers: 0,
    mmprojGpu: false,
    warmup: false,
    jobId: 1,
  });
  const loaded = addon.envInfo();
  m = undefined;
  let afterGc = addon.envInfo();
  for (let i = 0; i < 100 && afterGc.loaded > 0; i++) {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 20));
    afterGc = addon.envInfo();
  }
  parentPort.postMessage({ loaded, afterGc });
}
