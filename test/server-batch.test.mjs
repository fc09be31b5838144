// Dynamic batching in the server (createServer { maxBatch, batchDelayMs }, `xpsr serve --max-batch`) over
// real HTTP with the tiny model: concurrent same-size requests run as one batch (X-Xpsr-Batch-Size, the
// job's result.batchSize) and answer the same pixels as the same requests sent one at a time to a server
// without batching; another size runs in its own batch; a cancelled job leaves the others' results intact.
import test from 'ava';
import sharp from 'sharp';
import { XPSR, createServer } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';
import { QUICK, postImage, query, tinyPng, waitFor } from './helpers/server.mjs';

const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
const servers = [];
async function start(options = {}) {
  const server = await createServer({ engines: [engine], ...options });
  const url = await server.listen({ port: 0 });
  servers.push(server);
  return url;
}
test.after.always(async () => {
  for (const s of servers) await s.close(0);
  await engine.dispose();
});

// CFG on (2 rows per image), two steps: the batched step really mixes images
const OPTIONS = { ...QUICK, steps: '2', guidanceScale: '3' };
const pixels = async (png) => sharp(png).raw().toBuffer();

async function syncUpscale(url, seed, image) {
  const res = await postImage(`${url}/v1/upscale?${query({ ...OPTIONS, seed: String(seed) })}`, image);
  if (res.status !== 200) throw new Error(`upscale: HTTP ${res.status} ${await res.text()}`);
  return { batchSize: Number(res.headers.get('x-xpsr-batch-size')), pixels: await pixels(Buffer.from(await res.arrayBuffer())) };
}

test.serial('concurrent same-size requests run as one batch and answer what they answer alone', async (t) => {
  const images = await Promise.all([1, 2, 3].map((i) => tinyPng(i)));
  const other = await tinyPng(4, 24, 16);
  const plainUrl = await start();
  const alone = [];
  for (let i = 0; i < 3; i++) alone.push(await syncUpscale(plainUrl, 20 + i, images[i]));
  const otherAlone = await syncUpscale(plainUrl, 30, other);
  t.deepEqual(
    alone.map((r) => r.batchSize),
    [1, 1, 1],
  );
  t.false(alone[0].pixels.equals(alone[1].pixels));

  const url = await start({ maxBatch: 4, batchDelayMs: 400 });
  const rs = await Promise.all([...images.map((img, i) => syncUpscale(url, 20 + i, img)), syncUpscale(url, 30, other)]);
  // the four jobs were taken together; the device's instance ran the three 16x16 ones as one batch
  t.deepEqual(
    rs.map((r) => r.batchSize),
    [3, 3, 3, 1],
  );
  rs.slice(0, 3).forEach((r, i) => t.true(r.pixels.equals(alone[i].pixels), `request ${i + 1}: pixels differ from the unbatched server's`));
  t.true(rs[3].pixels.equals(otherAlone.pixels), 'the other size');
});

test.serial('batched jobs report result.batchSize; cancelling one job of a running batch leaves the others unchanged', async (t) => {
  const images = await Promise.all([5, 6, 7].map((i) => tinyPng(i)));
  const steps = '40'; // long enough to cancel the middle job while its batch denoises
  const plainUrl = await start();
  const alone = [];
  for (const i of [0, 2]) {
    const res = await postImage(`${plainUrl}/v1/upscale?${query({ ...OPTIONS, steps, seed: String(40 + i) })}`, images[i]);
    alone.push(await pixels(Buffer.from(await res.arrayBuffer())));
  }
  const url = await start({ maxBatch: 3, batchDelayMs: 300 });
  const submit = async (i) => {
    const res = await postImage(`${url}/v1/jobs?${query({ ...OPTIONS, steps, seed: String(40 + i) })}`, images[i]);
    t.is(res.status, 202);
    return (await res.json()).id;
  };
  const ids = await Promise.all([0, 1, 2].map(submit));
  const status = async (id) => (await fetch(`${url}/v1/jobs/${id}`)).json();
  await waitFor(
    async () => {
      const s = await status(ids[1]);
      return s.stage === 'denoise' && s.step >= 1;
    },
    { what: 'the batch to denoise' },
  );
  t.is((await fetch(`${url}/v1/jobs/${ids[1]}`, { method: 'DELETE' })).status, 200);
  const finals = await Promise.all(
    ids.map((id) =>
      waitFor(
        async () => {
          const s = await status(id);
          return ['done', 'failed', 'cancelled'].includes(s.state) && s;
        },
        { what: `job ${id}` },
      ),
    ),
  );
  t.deepEqual(
    finals.map((s) => s.state),
    ['done', 'cancelled', 'done'],
  );
  t.is(finals[1].error.code, 'ERR_CANCELLED');
  t.is(finals[0].result.batchSize, 3); // they ran in one batch with the cancelled job
  t.is(finals[2].result.batchSize, 3);
  for (const [k, i] of [
    [0, 0],
    [1, 2],
  ]) {
    const png = Buffer.from(await (await fetch(`${url}/v1/jobs/${ids[i]}/result`)).arrayBuffer());
    t.true((await pixels(png)).equals(alone[k]), `job ${i + 1}: pixels differ from the job run alone`);
  }
});

test.serial('batching options are validated; not with redis', async (t) => {
  for (const [o, name] of [
    [{ maxBatch: 0 }, 'maxBatch'],
    [{ maxBatch: 2.5 }, 'maxBatch'],
    [{ maxBatch: 65 }, 'maxBatch'],
    [{ batchDelayMs: -1 }, 'batchDelayMs'],
    [{ redis: 'redis://127.0.0.1:1', maxBatch: 2 }, 'maxBatch'],
  ]) {
    const e = await t.throwsAsync(createServer({ engines: [engine], ...o }));
    t.is(e.code, 'ERR_INVALID_OPTION');
    t.true(e.message.includes(`'${name}'`), e.message);
  }
});
