// The call queue with dynamic batching (lib/batch/batcher.ts) on its own, with a runner that records the
// batches it gets: grouping by key and limit, the delay, arrival order, cancellation while waiting, a
// failed preparation that rejects only its call, and a call queued just as the loop ends.
import test from 'ava';
import { Batcher } from '../dist/lib/batch/batcher.js';

function recording() {
  const batches = [];
  const batcher = new Batcher(async (members) => {
    batches.push(members.map((m) => m.value));
    await new Promise((r) => setTimeout(r, 5));
    for (const m of members) m.resolve({ value: m.value, size: members.length });
  });
  return { batcher, batches };
}
const prep =
  (value, key = 'a', limit = 4, delayMs = 0) =>
  async () => ({ key, limit, delayMs, value });

test('calls waiting together are grouped by key, up to the limit, in arrival order', async (t) => {
  const { batcher, batches } = recording();
  const rs = await Promise.all([
    batcher.submit(prep(1)),
    batcher.submit(prep(2, 'b')),
    batcher.submit(prep(3)),
    batcher.submit(prep(4)),
    batcher.submit(prep(5)),
    batcher.submit(prep(6)),
  ]);
  t.deepEqual(batches, [[1, 3, 4, 5], [2], [6]]);
  t.deepEqual(
    rs.map((r) => r.size),
    [4, 1, 4, 4, 4, 1],
  );
  t.deepEqual(batcher.stats(), { pending: 0, ready: 0, running: 0, batches: 3, calls: 6 });
});

test('limit 1 runs every call alone, in order; a delay waits for later calls of the same key', async (t) => {
  const alone = recording();
  await Promise.all([1, 2, 3].map((v) => alone.batcher.submit(prep(v, 'a', 1))));
  t.deepEqual(alone.batches, [[1], [2], [3]]);

  const delayed = recording();
  const first = delayed.batcher.submit(prep(1, 'a', 4, 200));
  await new Promise((r) => setTimeout(r, 50));
  const second = delayed.batcher.submit(prep(2, 'a', 4, 200));
  await Promise.all([first, second]);
  t.deepEqual(delayed.batches, [[1, 2]]);
});

test('an abort while waiting rejects that call at once; the others run', async (t) => {
  const { batcher, batches } = recording();
  const ctl = new AbortController();
  const a = batcher.submit(prep(1, 'a', 4, 100));
  const b = batcher.submit(prep(2, 'a', 4, 100), ctl.signal);
  const c = batcher.submit(prep(3, 'a', 4, 100));
  setTimeout(() => ctl.abort(), 20);
  const e = await t.throwsAsync(b);
  t.is(e.code, 'ERR_CANCELLED');
  await Promise.all([a, c]);
  t.deepEqual(batches, [[1, 3]]);
  const pre = new AbortController();
  pre.abort();
  t.is((await t.throwsAsync(batcher.submit(prep(4), pre.signal))).code, 'ERR_CANCELLED');
});

test('a failed preparation rejects only its call; a call submitted right after still runs', async (t) => {
  // queued from the rejection's continuation after k microtasks: one of these lands while the loop that
  // prepared the failed call is ending
  for (let k = 0; k < 6; k++) {
    const { batcher, batches } = recording();
    const bad = batcher.submit(async () => {
      throw new Error('unreadable');
    });
    let chain = bad.catch(() => undefined);
    for (let i = 0; i < k; i++) chain = chain.then(() => undefined);
    const next = chain.then(() => batcher.submit(prep(7)));
    t.is((await t.throwsAsync(bad)).message, 'unreadable');
    let timer;
    const hung = new Promise((r) => (timer = setTimeout(() => r('never ran'), 2000)));
    t.deepEqual(await Promise.race([next, hung]), { value: 7, size: 1 }, `submitted after ${k} microtasks`);
    clearTimeout(timer);
    t.deepEqual(batches, [[7]]);
  }
});

test('a runner that leaves a call unsettled rejects it with ERR_INTERNAL; a throwing runner rejects the batch', async (t) => {
  const lazy = new Batcher(async (members) => members[0].resolve('first'));
  const [x, y] = await Promise.allSettled([lazy.submit(prep(1)), lazy.submit(prep(2))]);
  t.is(x.value, 'first');
  t.is(y.reason.code, 'ERR_INTERNAL');
  const broken = new Batcher(async () => {
    throw new Error('engine lost');
  });
  t.is((await t.throwsAsync(broken.submit(prep(1)))).message, 'engine lost');
});
