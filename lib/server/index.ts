/**
 * `createServer(options)`: the XPSR HTTP server (fastify) for apps that embed or mount it; `xpsr serve`
 * is the same server behind a command line. Loaded on first use, so importing the library does not
 * load fastify or prom-client.
 */
import type { ServerOptions, XpsrServer } from './server.js';

export type { ServerOptions, XpsrServer } from './server.js';
export type {
  JobQueue,
  JobRequest,
  JobStatus,
  JobState,
  JobResult,
  JobResultInfo,
  JobEvent,
  JobError,
  JobOptions,
  DrainSummary,
  QueueStats,
  DeviceStatus,
  OutputFormat,
  SubmitOptions,
} from './jobs.js';

export async function createServer(options: ServerOptions = {}): Promise<XpsrServer> {
  const { createServer: create } = await import('./server.js');
  return create(options);
}
