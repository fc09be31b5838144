/**
 * The Redis queue layer (BullMQ): `createWorker(options)` runs GPU workers; `createServer({ redis })` puts a
 * stateless HTTP front on the same queue. Loaded on first use, so importing the library does not load
 * bullmq or ioredis.
 */
import type { WorkerOptions, XpsrWorker } from './worker.js';

export type { WorkerOptions, XpsrWorker, WorkerEngine } from './worker.js';

export async function createWorker(options: WorkerOptions): Promise<XpsrWorker> {
  const { createWorker: create } = await import('./worker.js');
  return create(options);
}
