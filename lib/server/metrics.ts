/**
 * Prometheus metrics (prom-client, one registry per server so several servers can share a process):
 * queue depth, running jobs, jobs by outcome and error code, latency histograms per stage and for the
 * queue wait, HTTP responses by route and status, device memory in use, readiness, and the default
 * process metrics (RSS, heap, event-loop lag, ...).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { deviceMemoryGauge, jobFamilies, type JobFamilies } from './metric-families.js';
import type { JobObserver } from './local-jobs.js';
import type { JobQueue, JobStatus } from './jobs.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly #jobs: Counter<'outcome'>;
  readonly #families: JobFamilies;
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
    deviceMemoryGauge(r, () => (stats()?.devices ?? []).map((d) => d.name));
    this.#jobs = new Counter({ name: 'xpsr_jobs_total', help: 'Finished jobs by outcome', labelNames: ['outcome'], registers: [r] });
    this.#families = jobFamilies(r, 'Time from submission to start on a device');
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
      started: (_s: JobStatus, waitMs: number) => this.#families.wait.observe(waitMs / 1000),
      finished: (s: JobStatus, timingsMs) => {
        this.#jobs.inc({ outcome: s.state });
        if (s.error) this.#families.errors.inc({ code: s.error.code });
        if (s.state === 'done' && timingsMs) this.#families.observeStages(timingsMs);
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
