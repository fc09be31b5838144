/**
 * `xpsr worker`: a GPU worker of the Redis queue (lib/queue/worker.ts) behind a command line. Loads one
 * engine per device, consumes upscale jobs (one at a time per device) until SIGTERM or SIGINT, when it takes
 * no new job and lets the running one finish (--drain-timeout); a second signal hands the running job back
 * to the queue at once. Exits 0 after a drain, 1 when loading fails or every device was lost.
 */
import { createWorker } from '../queue/index.js';
import { CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, captionerFromArgs, hasCaptionerArgs } from '../captioners/cli.js';
import { UsageError, amountFlag, parseFlags } from './common.js';

export const WORKER_HELP = `Usage: xpsr worker --redis URL --sd DIR --xpsr DIR [options]

Consumes upscale jobs that \`xpsr serve --redis URL\` servers enqueue (docs/deployment.md).

Queue
  --redis URL              the deployment's Redis, e.g. redis://redis.internal:6379 (or env XPSR_REDIS)
  --queue NAME             queue name (default xpsr); servers and workers of one deployment share it
  --blob-dir DIR           shared directory for input and result images (the servers use the same);
                           default: binary Redis keys with a TTL
  --max-blob-mb N          largest image kept in Redis (default 64)
  --name NAME              this worker's name in statuses and metrics (default <hostname>-<pid>)

Weights and devices
  --sd DIR, --xpsr DIR     Stable Diffusion 1.5 folder and XPSR checkpoint folder (or env XPSR_SD / XPSR_WEIGHTS)
  --model DIR              one folder holding all components (or env XPSR_MODEL)
  --device LIST            cuda:0 | cuda:0,cuda:1 | cpu | auto (default auto); one engine per device,
                           each runs one job at a time
  --threads N              CPU backend threads per engine

Reliability
  --lock-duration S        a job's lock, renewed at half of it; when a worker dies its job is taken over
                           by another worker after about this long (default 30)
  --stalled-interval S     how often to look for jobs of dead workers (default 30)
  --drain-timeout S        on SIGTERM/SIGINT, time for the running job to finish before it is handed back
                           to the queue (default 600)

Metrics
  --metrics-port N         serve /metrics, /healthz and /readyz on this port (default: off; 0 = any free port)
  --metrics-host ADDR      default 127.0.0.1

Captions for jobs that arrive without captions (default: "" for both)
${CAPTIONER_CLI_HELP}
  -h, --help
`;

export async function runWorkerCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('worker', argv, {
    redis: { type: 'string' },
    queue: { type: 'string' },
    'blob-dir': { type: 'string' },
    'max-blob-mb': { type: 'string' },
    name: { type: 'string' },
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    model: { type: 'string' },
    device: { type: 'string' },
    threads: { type: 'string' },
    'lock-duration': { type: 'string' },
    'stalled-interval': { type: 'string' },
    'drain-timeout': { type: 'string' },
    'metrics-port': { type: 'string' },
    'metrics-host': { type: 'string' },
    ...CAPTIONER_CLI_OPTIONS,
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(WORKER_HELP);
    return 0;
  }
  const num = amountFlag;
  const log = (s: string) => process.stderr.write(`xpsr worker: ${s}\n`);
  const redis = v.redis ?? process.env.XPSR_REDIS;
  if (!redis) throw new UsageError('--redis URL is required (or env XPSR_REDIS), e.g. --redis redis://127.0.0.1:6379');

  const captioner = await captionerFromArgs(v);

  const t0 = performance.now();
  const worker = await createWorker({
    redis,
    queue: v.queue,
    blobDir: v['blob-dir'],
    maxBlobBytes: num('max-blob-mb', v['max-blob-mb'], 2 ** 20),
    name: v.name,
    sd: v.sd ?? process.env.XPSR_SD,
    xpsr: v.xpsr ?? process.env.XPSR_WEIGHTS,
    model: v.model ?? process.env.XPSR_MODEL,
    devices: v.device ?? 'auto',
    threads: num('threads', v.threads),
    captioner,
    lockDurationMs: num('lock-duration', v['lock-duration'], 1000),
    stalledIntervalMs: num('stalled-interval', v['stalled-interval'], 1000),
    drainTimeoutMs: num('drain-timeout', v['drain-timeout'], 1000),
    metricsPort: num('metrics-port', v['metrics-port']),
    metricsHost: v['metrics-host'],
    onNotice: (m) => log(m.replace(/^xpsr worker:?\s*/, '')),
  });
  log(`${worker.name} connected to queue '${worker.queue}'${worker.metricsUrl ? `; metrics on ${worker.metricsUrl}/metrics` : ''}`);

  // Signals: the first drains (the running job finishes, no new one starts), a second hands the running job back.
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      log(`${sig} again: handing the running job back to the queue`);
      void worker.close(0);
      return;
    }
    stopping = true;
    log(`${sig}: draining (finishing the running job, taking no new one)`);
    void worker.close();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let code = 0;
  worker.loaded.then(
    () =>
      log(
        `ready: models loaded on ${worker
          .devices()
          .map((d) => d.name)
          .join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      ),
    (e: { message?: string; code?: string }) => {
      log(`loading the models failed: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
      code = 1;
      void worker.close(0);
    },
  );
  await worker.stopped;
  if (!stopping && code === 0) {
    log('every device was lost; stopping (the orchestrator should restart this worker)');
    code = 1;
  }
  await worker.close(0);
  log('stopped');
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  await captioner?.dispose();
  return code;
}
