/**
 * Prometheus metrics (prom-client, one registry per server so several servers can share a process):
 * queue depth, running jobs, jobs by outcome and error code, latency histograms per stage and for the
 * queue wait, HTTP responses by route and status, device memory in use, readiness, and the default
 * process metrics (RSS, heap, event-loop lag, ...).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { loadNative } from '../native.js';
import type { JobObserver } from './local-jobs.js';
import type { JobQueue, JobStatus } from './jobs.js';

/** Seconds, from a few ms (tiny models) to many minutes (large images on a CPU). */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600, 1800];
const STAGES = ['caption', 'text', 'encode', 'denoise', 'decode', 'colorfix', 'total'];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly #jobs: Counter<'outcome'>;
  readonly #errors: Counter<'code'>;
  readonly #stage: Histogram<'stage'>;
  readonly #wait: Histogram;
  readonly #http: Counter<'route' | 'method' | 'status'>;
  readonly #rejected: Counter<'code'>;

  constructor(queue: () => JobQueue | undefined) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'xpsr_' }); // xpsr_process_resident_memory_bytes, xpsr_nodejs_*
    const stats = () => queue()?.stats();
    new Gauge({
      name: 'xpsr_queue_depth',
      help: 'Jobs waiting for a device',
      registers: [r],
      collect() {
        this.set(stats()?.queued ?? 0);
      },
    });
    new Gauge({
      name: 'xpsr_jobs_running',
      help: 'Jobs running on a device',
      registers: [r],
      collect() {
        this.set(stats()?.running ?? 0);
      },
    });
    new Gauge({
      name: 'xpsr_results_stored_bytes',
      help: 'Bytes of finished results kept for their TTL',
      registers: [r],
      collect() {
        this.set(stats()?.storedBytes ?? 0);
      },
    });
    new Gauge({
      name: 'xpsr_ready',
      help: '1 when weights are loaded, every device is usable and jobs are accepted',
      registers: [r],
      collect() {
        const s = stats();
        this.set(s && s.ready && s.accepting ? 1 : 0);
      },
    });
    new Gauge({
      name: 'xpsr_device_memory_used_bytes',
      help: 'Memory in use per device (CUDA: total - free; cpu: process RSS)',
      labelNames: ['device'],
      registers: [r],
      collect() {
        this.reset();
        const devices = stats()?.devices ?? [];
        let cuda: { index: number; totalMemory: number; freeMemory: number }[] = [];
        if (devices.some((d) => d.name.startsWith('cuda'))) {
          try {
            cuda = loadNative().listDevices().cuda;
          } catch {
            cuda = [];
          }
        }
        for (const d of new Set(devices.map((x) => x.name))) {
          if (/^cpu(#\d+)?$/.test(d)) this.set({ device: d }, process.memoryUsage().rss);
          const m = /^cuda:(\d+)(#\d+)?$/.exec(d);
          const c = m && cuda.find((x) => x.index === Number(m[1]));
          if (c) this.set({ device: d }, c.totalMemory - c.freeMemory);
        }
      },
    });
    this.#jobs = new Counter({ name: 'xpsr_jobs_total', help: 'Finished jobs by outcome', labelNames: ['outcome'], registers: [r] });
    this.#errors = new Counter({
      name: 'xpsr_job_errors_total',
      help: 'Failed or cancelled jobs by error code',
      labelNames: ['code'],
      registers: [r],
    });
    this.#stage = new Histogram({
      name: 'xpsr_stage_duration_seconds',
      help: 'Time per pipeline stage of done jobs',
      labelNames: ['stage'],
      buckets: BUCKETS,
      registers: [r],
    });
    this.#wait = new Histogram({
      name: 'xpsr_queue_wait_seconds',
      help: 'Time from submission to start on a device',
      buckets: BUCKETS,
      registers: [r],
    });
    this.#http = new Counter({
      name: 'xpsr_http_responses_total',
      help: 'HTTP responses by route and status',
      labelNames: ['route', 'method', 'status'],
      registers: [r],
    });
    this.#rejected = new Counter({
      name: 'xpsr_jobs_rejected_total',
      help: 'Submissions refused (queue full, draining, not ready)',
      labelNames: ['code'],
      registers: [r],
    });
    for (const o of ['done', 'failed', 'cancelled']) this.#jobs.inc({ outcome: o }, 0);
  }

  observer(): JobObserver {
    return {
      started: (_s: JobStatus, waitMs: number) => this.#wait.observe(waitMs / 1000),
      finished: (s: JobStatus, timingsMs) => {
        this.#jobs.inc({ outcome: s.state });
        if (s.error) this.#errors.inc({ code: s.error.code });
        if (s.state === 'done' && timingsMs)
          for (const stage of STAGES) if (timingsMs[stage] !== undefined) this.#stage.observe({ stage }, timingsMs[stage] / 1000);
      },
    };
  }

  rejected(code: string): void {
    this.#rejected.inc({ code });
  }

  response(route: string, method: string, status: number): void {
    this.#http.inc({ route, method, status: String(status) });
  }
}
