/**
 * Per-worker metrics (Prometheus, pull): every worker process serves its own /metrics (with /healthz and
 * /readyz for orchestrators) on `--metrics-port`, labelled `worker="<name>"`, so one Prometheus job scrapes
 * all workers next to the servers. Names match the server's where they mean the same thing (stage
 * durations, queue wait, device memory), so one dashboard covers both deployments.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BUCKETS, deviceMemoryGauge, jobFamilies, type JobFamilies } from '../server/metric-families.js';
import type { DeviceStatus } from '../server/jobs.js';

/** How a job attempt ended on this worker (`retried`: a transient failure BullMQ tries again; `handed_back`: returned to the queue at shutdown). */
export type AttemptOutcome = 'done' | 'failed' | 'cancelled' | 'retried' | 'handed_back' | 'duplicate';

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly #attempts: Counter<'device' | 'outcome'>;
  readonly #families: JobFamilies;
  readonly #overhead: Histogram;

  constructor(worker: string, devices: () => DeviceStatus[]) {
    const r = this.registry;
    r.setDefaultLabels({ worker });
    collectDefaultMetrics({ register: r, prefix: 'xpsr_' });
    this.#attempts = new Counter({
      name: 'xpsr_worker_jobs_total',
      help: 'Job attempts on this worker by device and outcome',
      labelNames: ['device', 'outcome'],
      registers: [r],
    });
    this.#families = jobFamilies(r, 'Time from submission to start on this worker');
    this.#overhead = new Histogram({
      name: 'xpsr_worker_job_overhead_seconds',
      help: 'Time of a done job outside the library call: blob reads and writes, encoding, the final record',
      buckets: BUCKETS,
      registers: [r],
    });
    new Gauge({
      name: 'xpsr_worker_busy',
      help: '1 while the device runs a job',
      labelNames: ['device'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.name }, d.busy ? 1 : 0);
      },
    });
    new Gauge({
      name: 'xpsr_worker_ready',
      help: '1 when the device has its engine and takes jobs',
      labelNames: ['device'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.name }, d.state === 'ready' ? 1 : 0);
      },
    });
    deviceMemoryGauge(r, () => devices().map((d) => d.name));
  }

  attempt(device: string, outcome: AttemptOutcome, code?: string): void {
    this.#attempts.inc({ device, outcome });
    if (code && (outcome === 'failed' || outcome === 'cancelled')) this.#families.errors.inc({ code });
  }

  started(waitMs: number): void {
    this.#families.wait.observe(Math.max(0, waitMs) / 1000);
  }

  done(timingsMs: Record<string, number>, overheadMs: number): void {
    this.#families.observeStages(timingsMs);
    this.#overhead.observe(Math.max(0, overheadMs) / 1000);
  }
}

/** GET /metrics, /healthz (alive) and /readyz (200 when every device takes jobs) on host:port; resolves with the URL. */
export async function serveMetrics(
  metrics: WorkerMetrics,
  ready: () => boolean,
  host: string,
  port: number,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => res.writeHead(status, { 'Content-Type': type }).end(body);
    if (req.method !== 'GET') return send(405, 'application/json', JSON.stringify({ code: 'ERR_BAD_REQUEST', message: 'GET only' }));
    if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => send(200, metrics.registry.contentType, text),
        () => send(500, 'application/json', JSON.stringify({ code: 'ERR_INTERNAL', message: 'metrics failed' })),
      );
    } else if (url === '/healthz') {
      send(200, 'application/json', JSON.stringify({ status: 'ok' }));
    } else if (url === '/readyz') {
      const ok = ready();
      send(
        ok ? 200 : 503,
        'application/json',
        JSON.stringify(ok ? { ready: true } : { code: 'ERR_NOT_READY', message: 'the worker is loading, draining or lost its device' }),
      );
    } else {
      send(404, 'application/json', JSON.stringify({ code: 'ERR_NOT_FOUND', message: `no route GET ${url.slice(0, 200)}` }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
