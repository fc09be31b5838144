/**
 * Cancelling a job that runs on another machine. The server stores the request under the job's cancel key
 * (so a worker that picks the job up later, or was disconnected when it was sent, still sees it) and
 * publishes it on the queue's cancel channel (so the worker running it hears within milliseconds). A
 * worker watches the jobs it runs: the message, or a poll of the key every `pollMs` as a fallback, aborts
 * the job's AbortSignal, and the engine stops between steps.
 */
import type { Redis } from 'ioredis';
import type { CancelRequest, QueueKeys } from './protocol.js';

export async function requestCancel(redis: Redis, keys: QueueKeys, request: CancelRequest, ttlMs: number): Promise<void> {
  const text = JSON.stringify(request);
  await redis
    .multi()
    .set(keys.cancel(request.id), text, 'PX', Math.max(1000, Math.ceil(ttlMs)))
    .publish(keys.cancelChannel, text)
    .exec();
}

export async function readCancel(redis: Redis, keys: QueueKeys, id: string): Promise<CancelRequest | undefined> {
  const text = await redis.get(keys.cancel(id));
  return text ? (JSON.parse(text) as CancelRequest) : undefined;
}

export class CancelWatcher {
  readonly #watches = new Map<string, (r: CancelRequest) => void>();
  #started: Promise<unknown> | undefined;

  /**
   * `subscriber` is a connection of its own (a subscribed ioredis connection runs no other commands);
   * `redis` reads the cancel keys.
   */
  constructor(
    private readonly subscriber: Redis,
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
    private readonly pollMs = 500,
  ) {
    subscriber.on('message', (channel: string, text: string) => {
      if (channel !== keys.cancelChannel) return;
      let r: CancelRequest;
      try {
        r = JSON.parse(text) as CancelRequest;
      } catch {
        return;
      }
      this.#watches.get(r.id)?.(r);
    });
  }

  start(): Promise<unknown> {
    // ioredis subscribes again by itself after a reconnect.
    this.#started ??= this.subscriber.subscribe(this.keys.cancelChannel);
    return this.#started;
  }

  /** Calls `onCancel` once if job `id` is (or gets) cancelled, until the returned function is called. */
  watch(id: string, onCancel: (r: CancelRequest) => void): () => void {
    let fired = false;
    const fire = (r: CancelRequest) => {
      if (fired) return;
      fired = true;
      onCancel(r);
    };
    this.#watches.set(id, fire);
    const check = () => {
      readCancel(this.redis, this.keys, id).then(
        (r) => r && fire(r),
        () => undefined,
      );
    };
    check();
    const timer = setInterval(check, this.pollMs);
    timer.unref();
    return () => {
      clearInterval(timer);
      if (this.#watches.get(id) === fire) this.#watches.delete(id);
    };
  }
}
