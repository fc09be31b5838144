// `xpsr serve` as a process and its graceful drain on SIGTERM / SIGINT: new work is refused (503,
// /readyz false) while accepted jobs — queued, running, and a synchronous request in flight — finish;
// with a short --drain-timeout what is left is cancelled with ERR_SHUTDOWN (seen on the event streams);
// the process exits 0 and prints what happened.
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { model, root } from './helpers/fixtures.mjs';
import { QUICK, postImage, query, readEvents, tinyPng, waitFor } from './helpers/server.mjs';

const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');

/** Starts `xpsr serve` on a free port; resolves once it is ready. */
async function serve(args) {
  const child = spawn(process.execPath, [cli, 'serve', '--model', model, '--device', 'cpu', '--threads', '1', '--port', '0', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await waitFor(() => /listening on (http:\/\/\S+)/.exec(stderr)?.[1], { timeoutMs: 60_000, what: 'listening' });
  await waitFor(() => stderr.includes('ready:'), { timeoutMs: 60_000, what: 'ready' });
  return { child, url, exited, stderr: () => stderr };
}

async function submit(url, options) {
  const res = await postImage(`${url}/v1/jobs?${query(options)}`, await tinyPng());
  if (res.status !== 202) throw new Error(`submit: HTTP ${res.status}`);
  return res.json();
}

test('SIGTERM: refuse new work, finish running, queued and in-flight synchronous jobs, exit 0', async (t) => {
  const s = await serve(['--drain-timeout', '60']);
  t.teardown(() => s.child.kill('SIGKILL'));
  const running = await submit(s.url, { ...QUICK, steps: '60' });
  const queued = [await submit(s.url, QUICK), await submit(s.url, QUICK)];
  const streams = [running, ...queued].map((j) => readEvents(`${s.url}/v1/jobs/${j.id}/events`));
  const sync = postImage(`${s.url}/v1/upscale?${query(QUICK)}`, await tinyPng());
  // Everything is accepted (1 running, 3 queued including the synchronous one) before the signal.
  await waitFor(
    async () => {
      const info = await (await fetch(`${s.url}/v1/info`)).json();
      return info.running === 1 && info.queued === 3;
    },
    { what: 'one running and three queued jobs' },
  );

  s.child.kill('SIGTERM');
  await waitFor(async () => (await fetch(`${s.url}/readyz`)).status === 503, { what: 'readyz 503' });
  const refused = await postImage(`${s.url}/v1/jobs?${query(QUICK)}`, await tinyPng());
  t.is(refused.status, 503);
  t.is((await refused.json()).code, 'ERR_DRAINING');
  const status = await fetch(`${s.url}/v1/jobs/${queued[1].id}`);
  t.is(status.status, 200, 'job status stays readable while draining');

  const finals = (await Promise.all(streams)).map((events) => events.at(-1));
  t.deepEqual(
    finals.map((e) => e.event),
    ['done', 'done', 'done'],
  );
  const syncRes = await sync;
  t.is(syncRes.status, 200, 'the synchronous request in flight got its image');
  t.is(syncRes.headers.get('content-type'), 'image/png');
  const { code, signal } = await s.exited;
  t.is(signal, null);
  t.is(code, 0);
  t.regex(s.stderr(), /SIGTERM: draining/);
  t.regex(s.stderr(), /drained: 4 done, 0 failed, 0 cancelled\n/);
});

test('SIGINT with a short --drain-timeout: what is left is cancelled with ERR_SHUTDOWN, exit 0', async (t) => {
  const s = await serve(['--drain-timeout', '0.3']);
  t.teardown(() => s.child.kill('SIGKILL'));
  const long = await submit(s.url, { ...QUICK, steps: '500' });
  const waiting = await submit(s.url, QUICK);
  const streams = [long, waiting].map((j) => readEvents(`${s.url}/v1/jobs/${j.id}/events`));
  await waitFor(async () => (await (await fetch(`${s.url}/v1/jobs/${long.id}`)).json()).step > 0, { what: 'the long job to step' });

  s.child.kill('SIGINT');
  const finals = (await Promise.all(streams)).map((events) => events.at(-1));
  for (const f of finals) {
    t.is(f.event, 'cancelled');
    t.is(f.data.state, 'cancelled');
    t.is(f.data.error.code, 'ERR_SHUTDOWN');
    t.regex(f.data.error.message, /shut down before the job finished \(drain timeout 0\.3 s\)/);
  }
  t.true(finals[0].data.step < 500, 'the running job stopped between steps');
  const { code } = await s.exited;
  t.is(code, 0);
  t.regex(s.stderr(), /drained: 0 done, 0 failed, 2 cancelled \(drain timeout reached\)/);
});

test('xpsr serve --help lists the options; a load failure exits 1 with the reason', async (t) => {
  const help = spawn(process.execPath, [cli, 'serve', '--help']);
  let out = '';
  help.stdout.on('data', (d) => (out += d));
  t.is(await new Promise((r) => help.on('exit', r)), 0);
  for (const flag of ['--device', '--max-queue', '--api-key', '--drain-timeout', '--job-timeout', '--result-ttl']) t.true(out.includes(flag), flag);

  const bad = spawn(process.execPath, [cli, 'serve', '--model', path.join(root, 'no-such-model'), '--device', 'cpu', '--port', '0']);
  let err = '';
  bad.stderr.on('data', (d) => (err += d));
  t.is(await new Promise((r) => bad.on('exit', r)), 1);
  t.regex(err, /loading the models failed: .*no-such-model.*\[ERR_WEIGHTS_MISSING\]/);
});
