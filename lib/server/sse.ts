/**
 * GET /v1/jobs/:id/events as server-sent events: `state` with the status now and on every change,
 * `progress` on every step, and finally one event named after the final state (`done`, `failed`,
 * `cancelled`), after which the stream ends. Each `data:` line is a JobStatus in JSON. A comment line
 * every 15 s keeps proxies from closing an idle stream.
 */
import type { FastifyReply } from 'fastify';
import { isTerminal, type JobQueue, type JobStatus } from './jobs.js';

export class EventStreams {
  readonly #open = new Set<() => void>();

  /** Streams the events of job `initial.id` on the (hijacked) reply. */
  stream(reply: FastifyReply, jobs: JobQueue, initial: JobStatus): void {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // nginx: do not buffer the stream
    });
    let ended = false;
    let unsubscribe: (() => void) | undefined;
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    heartbeat.unref();
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      unsubscribe?.();
      this.#open.delete(end);
      res.end();
    };
    const send = (event: string, status: JobStatus) => {
      if (!ended) res.write(`event: ${event}\ndata: ${JSON.stringify(status)}\n\n`);
    };
    const last = (status: JobStatus) => {
      send('state', status);
      send(status.state, status);
      end();
    };
    this.#open.add(end);
    res.on('close', end);
    if (isTerminal(initial.state)) {
      last(initial);
      return;
    }
    send('state', initial);
    unsubscribe = jobs.subscribe(initial.id, (e) => {
      if (e.type === 'progress') send('progress', e.status);
      else if (isTerminal(e.status.state)) last(e.status);
      else send('state', e.status);
    });
    // The job may have finished between reading `initial` and subscribing.
    void jobs.get(initial.id).then((now) => {
      if (!now) end();
      else if (isTerminal(now.state)) last(now);
      else if (now.state !== initial.state) send('state', now);
    });
  }

  /** Ends every open stream (server shutdown, after every job reached its final state). */
  closeAll(): void {
    for (const end of [...this.#open]) end();
  }
}
