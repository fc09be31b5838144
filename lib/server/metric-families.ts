/**
 * The metric families the server (lib/server/metrics.ts) and the queue workers (lib/queue/worker-metrics.ts)
 * both export, defined once so that their names, buckets and meaning stay the same and one dashboard covers
 * both deployments: error codes, stage durations, queue wait, device memory.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { cudaMemory } from '../engine/device-memory.js';

/** Seconds, from a few ms (tiny models) to many minutes (large images on a CPU). */
export const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600, 1800];
const STAGES = ['caption', 'text', 'encode', 'denoise', 'decode', 'colorfix', 'total'];

export interface JobFamilies {
  errors: Counter<'code'>;
  wait: Histogram;
  /** Observes the stage timings of a done job (ms, as UpscaleResult.timingsMs). */
  observeStages(timingsMs: Record<string, number>): void;
}

/** xpsr_job_errors_total, xpsr_stage_duration_seconds and xpsr_queue_wait_seconds (`waitHelp` says where the wait ends). */
export function jobFamilies(r: Registry, waitHelp: string): JobFamilies {
  const errors = new Counter({ name: 'xpsr_job_errors_total', help: 'Failed or cancelled jobs by error code', labelNames: ['code'], registers: [r] });
  const stage = new Histogram({
    name: 'xpsr_stage_duration_seconds',
    help: 'Time per pipeline stage of done jobs',
    labelNames: ['stage'],
    buckets: BUCKETS,
    registers: [r],
  });
  const wait = new Histogram({ name: 'xpsr_queue_wait_seconds', help: waitHelp, buckets: BUCKETS, registers: [r] });
  return {
    errors,
    wait,
    observeStages(timingsMs) {
      for (const s of STAGES) if (timingsMs[s] !== undefined) stage.observe({ stage: s }, timingsMs[s] / 1000);
    },
  };
}

/**
 * xpsr_device_memory_used_bytes per device name: cpu, cpu#2, cuda:0, cuda:0#2, optionally after a worker's
 * name (`wA/cuda:0`); CUDA: total - free, cpu: process RSS.
 */
export function deviceMemoryGauge(r: Registry, deviceNames: () => string[]): void {
  new Gauge({
    name: 'xpsr_device_memory_used_bytes',
    help: 'Memory in use per device (CUDA: total - free; cpu: process RSS)',
    labelNames: ['device'],
    registers: [r],
    collect() {
      this.reset();
      for (const d of new Set(deviceNames())) {
        const device = d.slice(d.lastIndexOf('/') + 1);
        if (/^cpu(#\d+)?$/.test(device)) this.set({ device: d }, process.memoryUsage().rss);
        const cuda = cudaMemory(d);
        if (cuda) this.set({ device: d }, cuda.total - cuda.free);
      }
    },
  });
}
