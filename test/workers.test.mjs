// The engine addon keeps its state per environment (instance data, no process globals): two
// worker_threads load the library and run the tiny networks at the same time, each with its own engine,
// cancel flags and plans, and both get exactly the main thread's results.
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { run } from './helpers/engine-job.mjs';

test('two worker threads run the engine at once and match the main thread', async (t) => {
  const reference = await run();
  const spawn = () =>
    new Promise((resolve, reject) => {
      const w = new Worker(new URL('./helpers/engine-job.mjs', import.meta.url));
      w.once('message', (m) => (m.e ? reject(new Error(m.e)) : resolve(m.r)));
      w.once('error', reject);
      w.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
    });
  const results = await Promise.all([spawn(), spawn()]);
  for (const r of results) {
    t.deepEqual(r.ctx, reference.ctx);
    t.deepEqual(r.eps, reference.eps);
    t.deepEqual(r.img, reference.img);
  }
  // And once more after both workers (and their environments) are gone: the main thread's addon is intact.
  t.deepEqual((await run()).eps, reference.eps);
});
