// `createServer` over real HTTP on 127.0.0.1 with the tiny model: every endpoint, the job life cycle
// (queue positions, progress events, cancellation, timeout, TTL), backpressure, API keys, metrics, the
// OpenAPI document, and bad requests that each get the right status and a JSON error while the server
// stays ready. One engine is loaded once and handed to several servers with different limits.
import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import sharp from 'sharp';
import { XPSR, createServer, createCaptionerFromOptions } from '../dist/lib/index.js';
import { fixtures, model } from './helpers/fixtures.mjs';
import { QUICK, metric, pngDeclaring, postImage, query, rawRequest, readEvents, tinyPng, waitFor } from './helpers/server.mjs';

const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
/** A job that runs for seconds unless stopped (500 steps), used to hold a device busy. */
const SLOW = { ...QUICK, steps: '500' };

const servers = [];
async function start(options = {}) {
  const server = await createServer({ engines: [engine], ...options });
  const url = await server.listen({ port: 0 });
  servers.push(server);
  return { server, url };
}
test.after.always(async () => {
  for (const s of servers) await s.close(0);
  await engine.dispose();
});

async function json(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`not JSON (HTTP ${res.status}): ${text.slice(0, 200)}`);
  }
}

async function assertError(t, res, status, code, what, extraKeys = []) {
  t.is(res.status, status, `${what}: status`);
  t.regex(res.headers.get?.('content-type') ?? res.headers['content-type'], /^application\/json/, `${what}: content type`);
  const body = res.body instanceof Buffer ? JSON.parse(res.body.toString()) : await json(res);
  t.is(body.code, code, `${what}: code (${body.message})`);
  t.is(typeof body.message, 'string', `${what}: message`);
  t.true(body.message.length > 0, `${what}: message`);
  t.false(/\n\s+at /.test(body.message), `${what}: no stack trace`);
  t.deepEqual(Object.keys(body).sort(), ['code', 'message', ...extraKeys].sort(), `${what}: only code and message`);
  return body;
}

const submit = async (url, options, image, headers = {}) => {
  const res = await postImage(`${url}/v1/jobs?${query(options)}`, image ?? (await tinyPng()), { headers });
  if (res.status !== 202) throw new Error(`submit: HTTP ${res.status} ${await res.text()}`);
  return res.json();
};
const status = async (url, id) => (await fetch(`${url}/v1/jobs/${id}`)).json();

test.serial('readyz is 503 while the weights load and 200 after; healthz answers throughout; a load failure stays 503', async (t) => {
  const server = await createServer({ model, devices: 'cpu', threads: 1, onNotice: () => {} });
  servers.push(server);
  const url = await server.listen({ port: 0 });
  t.is((await fetch(`${url}/healthz`)).status, 200);
  const loading = await fetch(`${url}/readyz`);
  const body = await assertError(t, loading, 503, 'ERR_NOT_READY', 'readyz while loading', ['devices']);
  t.regex(body.message, /loading/);
  await assertError(t, await postImage(`${url}/v1/upscale?${query(QUICK)}`, await tinyPng()), 503, 'ERR_NOT_READY', 'POST while loading');
  await server.loaded;
  const ready = await fetch(`${url}/readyz`);
  t.is(ready.status, 200);
  t.is((await ready.json()).ready, true);
  t.is((await fetch(`${url}/healthz`)).status, 200);

  const broken = await createServer({ model: path.join(fixtures, 'no-such-model'), devices: 'cpu' });
  servers.push(broken);
  const burl = await broken.listen({ port: 0 });
  const e = await t.throwsAsync(broken.loaded);
  t.is(e.code, 'ERR_WEIGHTS_MISSING');
  const r = await assertError(t, await fetch(`${burl}/readyz`), 503, 'ERR_NOT_READY', 'readyz after a failed load', ['devices']);
  t.regex(r.message, /no-such-model/);
  t.is((await fetch(`${burl}/healthz`)).status, 200);
});

test.serial('POST /v1/upscale answers with the image, seed, prompts and timings; pixels equal a direct API call', async (t) => {
  const { url } = await start();
  const input = await tinyPng(3, 20, 12);
  const res = await postImage(`${url}/v1/upscale?${query({ ...QUICK, seed: '42', 'prompts.high': 'a café, 50% off' })}`, input);
  t.is(res.status, 200);
  t.is(res.headers.get('content-type'), 'image/png');
  t.is(res.headers.get('x-xpsr-seed'), '42');
  t.is(decodeURIComponent(res.headers.get('x-xpsr-prompt-high')), 'a café, 50% off');
  t.is(decodeURIComponent(res.headers.get('x-xpsr-prompt-low')), 'blurry');
  t.regex(res.headers.get('server-timing'), /denoise;dur=\d+(\.\d+)?/);
  const png = Buffer.from(await res.arrayBuffer());
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  t.is(info.width, 20);
  t.is(info.height, 12);
  const long = 'a very long caption '.repeat(400);
  const cut = await postImage(`${url}/v1/upscale?${query({ ...QUICK, 'prompts.high': long })}`, input);
  t.is(cut.status, 200);
  t.is(cut.headers.get('x-xpsr-prompts-truncated'), 'true');
  t.is(decodeURIComponent(cut.headers.get('x-xpsr-prompt-high')), long.slice(0, 1000));
  const direct = await engine.upscale(input, {
    steps: 1,
    processSize: 64,
    scale: 1,
    guidanceScale: 1,
    colorFix: 'none',
    seed: 42,
    prompts: { high: 'a café, 50% off', low: 'blurry' },
  });
  t.true(Buffer.from(data).equals(direct.image), 'same pixels as XPSR.upscale with the same options');
});

test.serial('multipart upload with options as form fields; the format comes from the field or Accept', async (t) => {
  const { url } = await start();
  const form = (fields) => {
    const fd = new FormData();
    for (const [k, v] of Object.entries(fields)) fd.append(k, v);
    return fd;
  };
  const png = await tinyPng(5);
  const a = await fetch(`${url}/v1/upscale`, {
    method: 'POST',
    body: (() => {
      const fd = form({ ...QUICK, scale: '2', seed: '7' });
      fd.append('image', new Blob([png], { type: 'image/png' }), 'in.png');
      return fd;
    })(),
    headers: { accept: 'image/jpeg' },
  });
  t.is(a.status, 200);
  t.is(a.headers.get('content-type'), 'image/jpeg');
  const meta = await sharp(Buffer.from(await a.arrayBuffer())).metadata();
  t.is(meta.format, 'jpeg');
  t.is(meta.width, 32);
  t.is(a.headers.get('x-xpsr-seed'), '7');

  const fd = form({ ...QUICK, format: 'webp' });
  fd.append('image', new Blob([png]), 'in.png');
  const b = await fetch(`${url}/v1/upscale`, { method: 'POST', body: fd });
  t.is(b.status, 200);
  t.is(b.headers.get('content-type'), 'image/webp');
  t.is((await sharp(Buffer.from(await b.arrayBuffer())).metadata()).format, 'webp');
});

test.serial('a job: 202 with Location, status, progress events for every step, then the result', async (t) => {
  const { url } = await start();
  const blocker = await submit(url, SLOW); // holds the device so the job below waits until we listen
  const res = await postImage(`${url}/v1/jobs?${query({ ...QUICK, steps: '3', seed: '9' })}`, await tinyPng(1));
  t.is(res.status, 202);
  const job = await res.json();
  t.regex(job.id, /^[0-9a-f-]{36}$/);
  t.is(res.headers.get('location'), `/v1/jobs/${job.id}`);
  t.is(job.state, 'queued');
  const stream = readEvents(`${url}/v1/jobs/${job.id}/events`, {
    onEvent: (e) => e.data.state === 'queued' && fetch(`${url}/v1/jobs/${blocker.id}`, { method: 'DELETE' }),
  });
  const events = await stream;
  t.deepEqual(
    events.filter((e) => e.event === 'state').map((e) => e.data.state),
    ['queued', 'running', 'done'],
  );
  const denoise = events.filter((e) => e.event === 'progress' && e.data.stage === 'denoise').map((e) => `${e.data.step}/${e.data.total}`);
  t.deepEqual(denoise, ['1/3', '2/3', '3/3']);
  for (const stage of ['text', 'encode', 'decode'])
    t.true(
      events.some((e) => e.data.stage === stage),
      stage,
    );
  const fractions = events.map((e) => e.data.progress);
  t.deepEqual(
    fractions,
    [...fractions].sort((x, y) => x - y),
    'progress never goes back',
  );
  const last = events.at(-1);
  t.is(last.event, 'done');
  t.is(last.data.state, 'done');
  t.is(last.data.progress, 1);
  t.is(last.data.result.seed, 9);
  t.is(last.data.result.width, 16);

  const s = await status(url, job.id);
  t.is(s.state, 'done');
  t.is(s.device, 'cpu');
  t.truthy(s.finishedAt);
  t.truthy(s.expiresAt);
  const r = await fetch(`${url}/v1/jobs/${job.id}/result`);
  t.is(r.status, 200);
  t.is(r.headers.get('x-job-id'), job.id);
  t.is((await sharp(Buffer.from(await r.arrayBuffer())).metadata()).width, 16);
  // A finished job's event stream answers at once with its final state.
  const again = await readEvents(`${url}/v1/jobs/${job.id}/events`);
  t.deepEqual(
    again.map((e) => e.event),
    ['state', 'done'],
  );
});

test.serial('queue positions, 429 + Retry-After when full, and DELETE cancels queued and running jobs', async (t) => {
  const { url, server } = await start({ maxQueue: 2 });
  const a = await submit(url, SLOW);
  await waitFor(async () => (await status(url, a.id)).state === 'running', { what: 'job A running' });
  const b = await submit(url, QUICK);
  const c = await submit(url, QUICK);
  t.is(b.position, 0);
  t.is(c.position, 1);
  t.is((await status(url, c.id)).position, 1);
  const full = await postImage(`${url}/v1/jobs?${query(QUICK)}`, await tinyPng());
  const body = await assertError(t, full, 429, 'ERR_QUEUE_FULL', 'queue full');
  t.regex(body.message, /queue is full/);
  t.true(Number(full.headers.get('retry-after')) >= 1, 'Retry-After in seconds');
  const sync = await postImage(`${url}/v1/upscale?${query(QUICK)}`, await tinyPng());
  await assertError(t, sync, 429, 'ERR_QUEUE_FULL', 'queue full (synchronous)');

  await assertError(t, await fetch(`${url}/v1/jobs/${b.id}/result`), 409, 'ERR_JOB_NOT_FINISHED', 'result of a queued job');
  const cc = await (await fetch(`${url}/v1/jobs/${c.id}`, { method: 'DELETE' })).json();
  t.is(cc.state, 'cancelled');
  t.is(cc.error.code, 'ERR_CANCELLED');
  t.is((await status(url, b.id)).position, 0);
  t.is(server.jobs.stats().queued, 1);

  const ar = await fetch(`${url}/v1/jobs/${a.id}`, { method: 'DELETE' });
  t.is(ar.status, 200);
  const ac = await ar.json();
  t.is(ac.state, 'cancelled', 'the running job stopped between steps');
  t.true(ac.step < 500);
  await assertError(t, await fetch(`${url}/v1/jobs/${a.id}/result`), 409, 'ERR_CANCELLED', 'result of a cancelled job');
  await assertError(t, await fetch(`${url}/v1/jobs/${a.id}`, { method: 'DELETE' }), 409, 'ERR_JOB_FINISHED', 'cancel a finished job');
  const bs = await server.jobs.settled(b.id);
  t.is(bs.state, 'done', 'the next job ran after the cancellation');
});

test.serial('a job running past the per-job timeout fails with ERR_TIMEOUT; the server stays ready', async (t) => {
  const { url } = await start({ jobTimeoutMs: 300 });
  const job = await submit(url, SLOW);
  const events = await readEvents(`${url}/v1/jobs/${job.id}/events`);
  const last = events.at(-1);
  t.is(last.event, 'failed');
  t.is(last.data.error.code, 'ERR_TIMEOUT');
  t.regex(last.data.error.message, /timeout \(0\.3 s\)/);
  await assertError(t, await fetch(`${url}/v1/jobs/${job.id}/result`), 503, 'ERR_TIMEOUT', 'result of a timed-out job');
  t.is((await fetch(`${url}/readyz`)).status, 200);
});

test.serial('finished jobs and their results are forgotten after the TTL', async (t) => {
  const { url, server } = await start({ resultTtlMs: 300 });
  const job = await submit(url, QUICK);
  await server.jobs.settled(job.id);
  t.is((await fetch(`${url}/v1/jobs/${job.id}/result`)).status, 200);
  t.is(server.jobs.stats().stored, 1);
  t.true(server.jobs.stats().storedBytes > 0);
  await waitFor(async () => (await fetch(`${url}/v1/jobs/${job.id}`)).status === 404, { what: 'expiry', timeoutMs: 5000 });
  await assertError(t, await fetch(`${url}/v1/jobs/${job.id}/result`), 404, 'ERR_JOB_NOT_FOUND', 'expired result');
  t.is(server.jobs.stats().stored, 0);
  t.is(server.jobs.stats().storedBytes, 0);
});

test.serial('the result byte budget forgets the oldest finished jobs first', async (t) => {
  const { url, server } = await start({ maxResultBytes: 1 });
  const a = await submit(url, QUICK);
  await server.jobs.settled(a.id);
  const b = await submit(url, QUICK);
  await server.jobs.settled(b.id);
  t.is((await fetch(`${url}/v1/jobs/${a.id}`)).status, 404, 'oldest forgotten');
  t.is((await fetch(`${url}/v1/jobs/${b.id}/result`)).status, 200, 'the newest is kept even above the budget');
  t.is(server.jobs.stats().stored, 1);
});

test.serial('a synchronous client that disconnects cancels its job', async (t) => {
  const { url, server } = await start();
  const png = await tinyPng();
  const u = new URL(`${url}/v1/upscale?${query(SLOW)}`);
  const req = http.request({
    host: u.hostname,
    port: u.port,
    path: u.pathname + u.search,
    method: 'POST',
    headers: { 'content-type': 'image/png', 'content-length': png.length },
  });
  req.on('error', () => {});
  req.end(png);
  await waitFor(() => server.jobs.stats().running === 1, { what: 'the job to run' });
  req.destroy();
  await waitFor(() => server.jobs.stats().running === 0, { what: 'the job to stop' });
  const m = await (await fetch(`${url}/metrics`)).text();
  t.is(metric(m, 'xpsr_job_errors_total', { code: 'ERR_CLIENT_GONE' }), 1);
  t.is(metric(m, 'xpsr_jobs_total', { outcome: 'cancelled' }), 1);
  t.is(server.jobs.stats().stored, 0, 'a synchronous job is not kept');
  t.is((await fetch(`${url}/readyz`)).status, 200);
});

test.serial('bad requests get the right status and a JSON error, and the server stays ready', async (t) => {
  const { url } = await start({ bodyLimitBytes: 64 * 1024 });
  const png = await tinyPng();
  const up = (q = QUICK) => `${url}/v1/upscale?${query(q)}`;
  const boundary = '----xpsrtest';
  const multipartHead = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n` + 'Content-Type: image/png\r\n\r\n',
  );
  const cases = [
    ['garbage body', () => postImage(up(), Buffer.from('this is not an image at all')), 422, 'ERR_IMAGE_UNREADABLE'],
    [
      'wrong content type',
      () => fetch(up(), { method: 'POST', body: '{"image": 1}', headers: { 'content-type': 'application/json' } }),
      415,
      'ERR_UNSUPPORTED_MEDIA_TYPE',
    ],
    ['text body', () => fetch(up(), { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['empty image body', () => postImage(up(), Buffer.alloc(0)), 400, 'ERR_IMAGE_MISSING'],
    ['no body at all', () => fetch(up(), { method: 'POST' }), 400, 'ERR_IMAGE_MISSING'],
    [
      'truncated multipart',
      () =>
        rawRequest(url, {
          path: `/v1/jobs?${query(QUICK)}`,
          headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
          body: Buffer.concat([multipartHead, png.subarray(0, 40)]),
        }),
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'multipart without a file',
      () => {
        const fd = new FormData();
        fd.append('steps', '1');
        return fetch(`${url}/v1/jobs`, { method: 'POST', body: fd });
      },
      400,
      'ERR_IMAGE_MISSING',
    ],
    ['oversized raw body', () => postImage(up(), Buffer.alloc(100 * 1024, 1)), 413, 'ERR_BODY_TOO_LARGE'],
    [
      'oversized body with a lying Content-Length',
      () =>
        rawRequest(url, {
          path: `/v1/upscale?${query(QUICK)}`,
          headers: { 'content-type': 'image/png', 'transfer-encoding': 'chunked' },
          body: Buffer.alloc(100 * 1024, 2),
        }),
      413,
      'ERR_BODY_TOO_LARGE',
    ],
    [
      'oversized multipart file',
      () => {
        const fd = new FormData();
        fd.append('image', new Blob([Buffer.alloc(100 * 1024, 3)]), 'big.png');
        return fetch(`${url}/v1/jobs`, { method: 'POST', body: fd });
      },
      413,
      'ERR_BODY_TOO_LARGE',
    ],
    ['huge declared image size', () => postImage(up(), pngDeclaring(100_000, 100_000)), 413, 'ERR_IMAGE_TOO_LARGE'],
    ['output above the output pixel limit', () => postImage(up({ ...QUICK, scale: '16', processSize: '8192' }), png), 413, 'ERR_IMAGE_TOO_LARGE'],
    ['unknown option', () => postImage(up({ ...QUICK, stepz: '2' }), png), 400, 'ERR_INVALID_OPTION'],
    ['invalid option value', () => postImage(up({ ...QUICK, steps: '0' }), png), 400, 'ERR_INVALID_OPTION'],
    ['non-numeric number option', () => postImage(up({ ...QUICK, guidanceScale: 'lots' }), png), 400, 'ERR_INVALID_OPTION'],
    ['invalid enum option', () => postImage(up({ ...QUICK, scheduler: 'euler' }), png), 400, 'ERR_INVALID_OPTION'],
    ['option given twice', () => postImage(`${up()}&steps=2`, png), 400, 'ERR_BAD_REQUEST'],
    ['input limit set by a client', () => postImage(up({ ...QUICK, maxInputPixels: '999999999' }), png), 400, 'ERR_INVALID_OPTION'],
    ['unknown format', () => postImage(up({ ...QUICK, format: 'bmp' }), png), 400, 'ERR_INVALID_OPTION'],
    ['unknown job id', () => fetch(`${url}/v1/jobs/00000000-0000-0000-0000-000000000000`), 404, 'ERR_JOB_NOT_FOUND'],
    ['unknown job id (result)', () => fetch(`${url}/v1/jobs/nope/result`), 404, 'ERR_JOB_NOT_FOUND'],
    ['unknown job id (events)', () => fetch(`${url}/v1/jobs/nope/events`), 404, 'ERR_JOB_NOT_FOUND'],
    ['unknown job id (cancel)', () => fetch(`${url}/v1/jobs/nope`, { method: 'DELETE' }), 404, 'ERR_JOB_NOT_FOUND'],
    ['unknown route', () => fetch(`${url}/v2/upscale`), 404, 'ERR_NOT_FOUND'],
    ['wrong method', () => fetch(`${url}/v1/upscale`), 404, 'ERR_NOT_FOUND'],
  ];
  const messages = {};
  for (const [what, send, code, errCode] of cases) {
    const res = await send();
    const body = await assertError(t, res, code, errCode, what);
    messages[what] = body.message;
    t.is((await fetch(`${url}/readyz`)).status, 200, `${what}: still ready`);
  }
  // Not even HTTP: still a JSON error, and the server keeps serving.
  const garbage = await new Promise((resolve, reject) => {
    const u = new URL(url);
    const sock = net.connect(Number(u.port), u.hostname, () => sock.end('NOT HTTP AT ALL\r\n\r\n'));
    const parts = [];
    sock.on('data', (c) => parts.push(c));
    sock.on('end', () => resolve(Buffer.concat(parts).toString()));
    sock.on('error', reject);
  });
  t.regex(garbage, /^HTTP\/1\.1 400 /);
  t.deepEqual(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4)), { code: 'ERR_BAD_REQUEST', message: 'malformed HTTP request' });
  t.is((await fetch(`${url}/readyz`)).status, 200);
  t.regex(messages['invalid option value'], /^Invalid option 'steps': expected an integer between 1 and 1000, got 0 \(number\)/);
  t.regex(messages['non-numeric number option'], /'guidanceScale'.*"lots" \(string\)/);
  t.regex(messages['unknown option'], /Unknown option 'stepz'/);
  t.regex(messages['huge declared image size'], /100000x100000/);
  t.regex(messages['wrong content type'], /application\/json/);
  // After all that, a good request still works.
  t.is((await postImage(up(), png)).status, 200);
});

test.serial('API keys: a missing or wrong key gets the same 401; a right key passes; probes stay open', async (t) => {
  const keys = ['first-secret-key', 'second-secret-key'];
  const { url } = await start({ apiKeys: keys });
  const bodies = [];
  for (const headers of [
    {},
    { authorization: 'Bearer wrong-secret-key' },
    { authorization: 'Bearer first-secret-kez' },
    { authorization: 'Basic Zmlyc3Qtc2VjcmV0LWtleQ==' },
    { authorization: 'Bearer ' },
    { authorization: 'first-secret-key' },
  ]) {
    const res = await fetch(`${url}/v1/info`, { headers });
    t.is(res.headers.get('www-authenticate'), 'Bearer');
    bodies.push(await assertError(t, res, 401, 'ERR_UNAUTHORIZED', JSON.stringify(headers)));
  }
  t.true(
    bodies.every((b) => b.message === bodies[0].message),
    'the refusal does not say what was wrong',
  );
  for (const key of keys) t.is((await fetch(`${url}/v1/info`, { headers: { authorization: `Bearer ${key}` } })).status, 200);
  t.is((await fetch(`${url}/metrics`)).status, 401);
  t.is((await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${keys[0]}` } })).status, 200);
  await assertError(t, await postImage(`${url}/v1/jobs?${query(QUICK)}`, await tinyPng()), 401, 'ERR_UNAUTHORIZED', 'submit without key');
  await assertError(t, await fetch(`${url}/v1/jobs/x/events`), 401, 'ERR_UNAUTHORIZED', 'events without key');
  const job = await submit(url, QUICK, undefined, { authorization: `Bearer ${keys[1]}` });
  t.is(job.state === 'queued' || job.state === 'running', true);
  for (const open of ['/healthz', '/readyz', '/openapi.json', '/']) t.is((await fetch(`${url}${open}`)).status, 200, open);
  const short = await t.throwsAsync(createServer({ engines: [engine], apiKeys: ['short'] }));
  t.is(short.code, 'ERR_INVALID_OPTION');
});

test.serial('captions come from the configured captioner when a request gives none', async (t) => {
  const captioner = await createCaptionerFromOptions({ promptHigh: 'a captioned cup', promptLow: 'a little noisy' });
  const { url } = await start({ captioner });
  const info = await (await fetch(`${url}/v1/info`)).json();
  t.true(info.captioner);
  const { 'prompts.high': _h, 'prompts.low': _l, ...noPrompts } = QUICK;
  const a = await postImage(`${url}/v1/upscale?${query(noPrompts)}`, await tinyPng());
  t.is(a.status, 200);
  t.is(decodeURIComponent(a.headers.get('x-xpsr-prompt-high')), 'a captioned cup');
  t.is(decodeURIComponent(a.headers.get('x-xpsr-prompt-low')), 'a little noisy');
  const b = await postImage(`${url}/v1/upscale?${query(QUICK)}`, await tinyPng());
  t.is(decodeURIComponent(b.headers.get('x-xpsr-prompt-high')), 'a cup', 'given captions win');
});

test.serial('/metrics: queue depth, running jobs, outcomes, error codes, stage latencies, device memory', async (t) => {
  const { url, server } = await start();
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await submit(url, QUICK)).id);
  const bad = await submit(url, QUICK, pngDeclaring(64, 64)); // passes the header check, fails to decode
  for (const id of [...ids, bad.id]) await server.jobs.settled(id);
  t.is((await status(url, bad.id)).state, 'failed');
  await postImage(`${url}/v1/upscale?${query(QUICK)}`, await tinyPng());
  const res = await fetch(`${url}/metrics`);
  t.regex(res.headers.get('content-type'), /^text\/plain/);
  const m = await res.text();
  t.is(metric(m, 'xpsr_queue_depth'), 0);
  t.is(metric(m, 'xpsr_jobs_running'), 0);
  t.is(metric(m, 'xpsr_ready'), 1);
  t.is(metric(m, 'xpsr_jobs_total', { outcome: 'done' }), 4);
  t.is(metric(m, 'xpsr_jobs_total', { outcome: 'failed' }), 1);
  t.is(metric(m, 'xpsr_job_errors_total', { code: 'ERR_IMAGE_UNREADABLE' }), 1);
  for (const stage of ['text', 'encode', 'denoise', 'decode', 'total']) t.is(metric(m, 'xpsr_stage_duration_seconds_count', { stage }), 4, stage);
  t.is(metric(m, 'xpsr_queue_wait_seconds_count'), 5);
  t.true(metric(m, 'xpsr_device_memory_used_bytes', { device: 'cpu' }) > 0);
  t.true(metric(m, 'xpsr_http_responses_total', { route: '/v1/jobs', method: 'POST', status: '202' }) >= 4);
  t.true(metric(m, 'xpsr_process_resident_memory_bytes') > 0);
});

test.serial('OpenAPI: every route is documented and every documented route exists', async (t) => {
  const { url, server } = await start();
  const doc = await (await fetch(`${url}/openapi.json`)).json();
  t.is(doc.openapi, '3.1.0');
  const documented = Object.entries(doc.paths)
    .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`))
    .sort();
  const assets = new Set(['/app.js', '/style.css']);
  const served = [...new Set(server.routes.filter((r) => !assets.has(r.url)).map((r) => `${r.method} ${r.url}`))].sort();
  t.deepEqual(documented, served);
  for (const [p, ops] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(ops)) t.truthy(op.responses && Object.keys(op.responses).length, `${m} ${p} has responses`);
  const params = doc.paths['/v1/upscale'].post.parameters.map((p) => p.name);
  for (const name of ['steps', 'seed', 'guidanceScale', 'prompts.high', 'format']) t.true(params.includes(name), name);
});

test.serial('two engines: jobs go to the first free device, one job per device at a time', async (t) => {
  const second = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
  t.teardown(() => second.dispose());
  const { url, server } = await start({ engines: [engine, second] });
  const info = await (await fetch(`${url}/v1/info`)).json();
  t.deepEqual(
    info.devices.map((d) => d.name),
    ['cpu', 'cpu#2'],
  );
  const a = await submit(url, SLOW);
  const b = await submit(url, SLOW);
  const c = await submit(url, QUICK);
  await waitFor(() => server.jobs.stats().running === 2, { what: 'both devices busy' });
  const [sa, sb, sc] = await Promise.all([a, b, c].map((j) => status(url, j.id)));
  t.deepEqual([sa.device, sb.device].sort(), ['cpu', 'cpu#2']);
  t.is(sc.state, 'queued');
  t.is(sc.position, 0);
  t.true(server.jobs.stats().devices.every((d) => d.busy));
  await fetch(`${url}/v1/jobs/${b.id}`, { method: 'DELETE' });
  const done = await server.jobs.settled(c.id);
  t.is(done.state, 'done');
  t.is(done.device, sb.device, 'the queued job took the device that became free');
  await fetch(`${url}/v1/jobs/${a.id}`, { method: 'DELETE' });
});

test.serial('/v1/info, the web page and its assets', async (t) => {
  const { url } = await start({ maxQueue: 5 });
  const info = await (await fetch(`${url}/v1/info`)).json();
  t.is(info.ready, true);
  t.is(info.limits.maxQueue, 5);
  t.is(info.limits.maxInputPixels, 1_048_576);
  t.is(info.captioner, false);
  t.is(info.auth, false);
  const page = await fetch(`${url}/`);
  t.regex(page.headers.get('content-type'), /^text\/html/);
  const html = await page.text();
  for (const id of ['file', 'progress', 'compare', 'slider', 'download']) t.true(html.includes(`id="${id}"`), id);
  t.regex((await fetch(`${url}/app.js`)).headers.get('content-type'), /^text\/javascript/);
  t.regex((await fetch(`${url}/style.css`)).headers.get('content-type'), /^text\/css/);
});

test.serial('handle(req, res) mounts the server inside another node http server', async (t) => {
  const server = await createServer({ engines: [engine] });
  servers.push(server);
  const outer = http.createServer((req, res) => server.handle(req, res));
  await new Promise((r) => outer.listen(0, '127.0.0.1', r));
  t.teardown(() => outer.close());
  const url = `http://127.0.0.1:${outer.address().port}`;
  t.is((await fetch(`${url}/readyz`)).status, 200);
  const res = await postImage(`${url}/v1/upscale?${query(QUICK)}`, await tinyPng());
  t.is(res.status, 200);
  t.is((await sharp(Buffer.from(await res.arrayBuffer())).metadata()).width, 16);
});

test.serial('createServer refuses bad options with coded errors', async (t) => {
  for (const o of [{ maxQueue: -1 }, { bodyLimitBytes: 10 }, { devices: ' , ' }, { jobTimeoutMs: 0 }]) {
    const e = await t.throwsAsync(createServer({ model, ...o }));
    t.is(e.code, 'ERR_INVALID_OPTION', JSON.stringify(o));
  }
});

test.serial('drain: no new jobs (503), readyz false, queued and running jobs finish', async (t) => {
  const { url, server } = await start();
  const a = await submit(url, { ...QUICK, steps: '20' });
  const b = await submit(url, QUICK);
  const draining = server.drain(30_000);
  await assertError(t, await fetch(`${url}/readyz`), 503, 'ERR_DRAINING', 'readyz while draining', ['devices']);
  await assertError(t, await postImage(`${url}/v1/jobs?${query(QUICK)}`, await tinyPng()), 503, 'ERR_DRAINING', 'submit while draining');
  t.is((await fetch(`${url}/v1/jobs/${a.id}`)).status, 200, 'status reads still work');
  const summary = await draining;
  t.deepEqual(summary, { done: 2, failed: 0, cancelled: 0, timedOut: false });
  t.is((await status(url, b.id)).state, 'done');
  t.is((await fetch(`${url}/v1/jobs/${b.id}/result`)).status, 200, 'results stay readable until close');
});
