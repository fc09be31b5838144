/**
 * `xpsr serve`: the HTTP server (lib/server) behind a command line. Loads one engine per device while
 * already answering /healthz, then serves until SIGTERM or SIGINT, when it drains: no new jobs (503,
 * /readyz false), queued and running jobs finish within --drain-timeout, the rest are cancelled with
 * ERR_SHUTDOWN, and the process exits 0. A second signal cancels what is left at once.
 */
import { readFileSync } from 'node:fs';
import { createServer } from '../server/index.js';
import { CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, captionerFromArgs, hasCaptionerArgs } from '../captioners/cli.js';
import { UsageError, amountFlag, parseFlags } from './common.js';

export const SERVE_HELP = `Usage: xpsr serve --sd DIR --xpsr DIR [options]
       xpsr serve --redis URL [options]      (a stateless front: jobs run on xpsr worker processes)

Weights and devices (chosen at start only; no request names a file or a device)
  --sd DIR, --xpsr DIR     Stable Diffusion 1.5 folder and XPSR checkpoint folder (or env XPSR_SD / XPSR_WEIGHTS)
  --model DIR              one folder holding all components (or env XPSR_MODEL)
  --device LIST            cpu | cuda | cuda:0,cuda:1 | auto (default auto); one engine per device,
                           each runs one job at a time, a job goes to the first free device
  --threads N              CPU backend threads per engine
  --max-batch N            a free device takes up to N waiting jobs and runs those of one processed
                           size as one batch (default 1: one job at a time)
  --batch-delay-ms MS      how long the oldest waiting job waits for others to fill a batch (default 0)

Remote workers (docs/deployment.md)
  --redis URL              enqueue jobs on this Redis for \`xpsr worker\` processes instead of loading
                           weights here (or env XPSR_REDIS); same API, same job states
  --queue NAME             queue name (default xpsr)
  --blob-dir DIR           shared directory for images (the workers use the same); default Redis keys
  --max-blob-mb N          largest image kept in Redis (default 64)
  --input-ttl S            how long a queued job's input waits for a worker (default 3600)
  --attempts N             attempts per job for transient failures: device lost, out of memory (default 3)

Network
  --host ADDR              default 127.0.0.1 (use 0.0.0.0 only behind a firewall or a reverse proxy)
  --port N                 default 8080 (0 = any free port)
  --api-key KEY            require "Authorization: Bearer KEY" (repeatable; or env XPSR_API_KEYS=k1,k2)
  --api-key-file FILE      keys, one per line

Limits
  --max-queue N            jobs waiting for a device before 429 + Retry-After (default 32)
  --max-body-mb N          largest request body (default 32)
  --max-input-pixels N     largest input image (default 1048576)
  --max-output-pixels N    largest output / processed image (default 16 x max input pixels)
  --job-timeout S          a running job is stopped after S seconds (default 600)
  --result-ttl S           finished jobs and results are kept S seconds (default 600)
  --max-result-mb N        bytes of results kept at most (default 1024; oldest forgotten first)
  --drain-timeout S        on SIGTERM/SIGINT, time for queued and running jobs to finish (default 60)

Captions for requests that send none (default: "" for both)
${CAPTIONER_CLI_HELP}
Logging
  --log                    JSON request logs on stdout (fastify/pino)
  -h, --help
`;

export async function runServeCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('serve', argv, {
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    model: { type: 'string' },
    device: { type: 'string' },
    threads: { type: 'string' },
    'max-batch': { type: 'string' },
    'batch-delay-ms': { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'api-key': { type: 'string', multiple: true },
    'api-key-file': { type: 'string' },
    'max-queue': { type: 'string' },
    'max-body-mb': { type: 'string' },
    'max-input-pixels': { type: 'string' },
    'max-output-pixels': { type: 'string' },
    'job-timeout': { type: 'string' },
    'result-ttl': { type: 'string' },
    'max-result-mb': { type: 'string' },
    'drain-timeout': { type: 'string' },
    redis: { type: 'string' },
    queue: { type: 'string' },
    'blob-dir': { type: 'string' },
    'max-blob-mb': { type: 'string' },
    'input-ttl': { type: 'string' },
    attempts: { type: 'string' },
    ...CAPTIONER_CLI_OPTIONS,
    log: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const num = amountFlag;
  const log = (s: string) => process.stderr.write(`xpsr serve: ${s}\n`);

  const keys = [
    ...(v['api-key'] ?? []),
    ...(process.env.XPSR_API_KEYS ?? '').split(','),
    ...(v['api-key-file'] ? readFileSync(v['api-key-file'], 'utf8').split('\n') : []),
  ]
    .map((k) => k.trim())
    .filter((k) => k.length > 0);

  const captionerFlags = hasCaptionerArgs(v);
  const redis = v.redis ?? process.env.XPSR_REDIS;
  if (redis !== undefined) {
    if (v['max-batch'] !== undefined || v['batch-delay-ms'] !== undefined)
      throw new UsageError(
        '--redis: --max-batch and --batch-delay-ms apply where the engines run (a local serve); xpsr worker runs one job at a time',
      );
    const local = ['sd', 'xpsr', 'model', 'device', 'threads'].filter((k) => v[k as keyof typeof v] !== undefined);
    if (local.length) throw new UsageError(`--redis: this server loads no weights; give ${local.map((k) => `--${k}`).join(', ')} to xpsr worker`);
    if (captionerFlags) throw new UsageError('--redis: captioning runs on the workers; give the captioner flags to xpsr worker');
  }
  const captioner = await captionerFromArgs(v);

  const server = await createServer({
    ...(redis !== undefined
      ? {
          redis,
          queue: v.queue,
          blobDir: v['blob-dir'],
          maxBlobBytes: num('max-blob-mb', v['max-blob-mb'], 2 ** 20),
          inputTtlMs: num('input-ttl', v['input-ttl'], 1000),
          attempts: num('attempts', v.attempts),
        }
      : {
          sd: v.sd ?? process.env.XPSR_SD,
          xpsr: v.xpsr ?? process.env.XPSR_WEIGHTS,
          model: v.model ?? process.env.XPSR_MODEL,
          devices: v.device ?? 'auto',
          threads: num('threads', v.threads),
          maxBatch: num('max-batch', v['max-batch']),
          batchDelayMs: num('batch-delay-ms', v['batch-delay-ms']),
          captioner,
        }),
    apiKeys: keys,
    maxQueue: num('max-queue', v['max-queue']),
    bodyLimitBytes: num('max-body-mb', v['max-body-mb'], 2 ** 20),
    maxInputPixels: num('max-input-pixels', v['max-input-pixels']),
    maxOutputPixels: num('max-output-pixels', v['max-output-pixels']),
    jobTimeoutMs: num('job-timeout', v['job-timeout'], 1000),
    resultTtlMs: num('result-ttl', v['result-ttl'], 1000),
    maxResultBytes: num('max-result-mb', v['max-result-mb'], 2 ** 20),
    drainTimeoutMs: num('drain-timeout', v['drain-timeout'], 1000),
    logger: v.log ? true : false,
    onNotice: (m) => log(m),
  });

  // Signals: the first drains, a second one cancels what is left at once.
  let stopping = false;
  let stopped!: (summary: string) => void;
  const done = new Promise<string>((r) => (stopped = r));
  const shutdown = (why: string) => {
    if (stopping) {
      log(`${why} again: cancelling what is left`);
      void server.drain(0);
      return;
    }
    stopping = true;
    log(`${why}: draining (no new jobs; running and queued jobs may finish)`);
    void server.close().then(
      (s) => stopped(`drained: ${s.done} done, ${s.failed} failed, ${s.cancelled} cancelled${s.timedOut ? ' (drain timeout reached)' : ''}`),
      (e: Error) => stopped(`shutdown error: ${e.message}`),
    );
  };
  const onSignal = (sig: NodeJS.Signals) => shutdown(sig);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  const url = await server.listen({ host: v.host ?? '127.0.0.1', port: num('port', v.port) ?? 8080 });
  log(`listening on ${url} (API keys: ${keys.length ? keys.length : 'off'})`);
  const t0 = performance.now();
  server.loaded.then(
    () => {
      const devices = server.jobs
        .stats()
        .devices.map((d) => d.name)
        .join(', ');
      if (redis !== undefined) log(`queue '${v.queue ?? 'xpsr'}' on Redis; workers now: ${devices || 'none yet (start xpsr worker)'}`);
      else log(`ready: models loaded on ${devices} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    },
    (e: { message?: string; code?: string }) => {
      log(`loading the models failed: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
      process.exitCode = 1;
      if (!stopping) shutdown('stopping');
    },
  );
  const summary = await done;
  log(summary);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  await captioner?.dispose();
  return process.exitCode === 1 ? 1 : 0;
}
