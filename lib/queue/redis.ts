/**
 * Redis connections of the queue layer (ioredis): reconnect forever with a short capped backoff, so a
 * Redis restart costs a pause and never a crash; commands issued while disconnected wait in the offline
 * queue (maxRetriesPerRequest: null, which BullMQ workers require) and run on reconnect.
 */
import { Redis } from 'ioredis';

/** Reconnect delay: 50 ms, doubling, at most 1 s (a restarted Redis is used again within a second). */
export function reconnectDelay(attempt: number): number {
  return Math.min(1000, 50 * 2 ** Math.min(attempt, 5));
}

export function connectRedis(url: string, name: string): Redis {
  const r = new Redis(url, {
    maxRetriesPerRequest: null,
    retryStrategy: reconnectDelay,
    connectionName: name,
    enableReadyCheck: true,
  });
  // Without a listener ioredis prints every failed reconnect; the state is read from `status` instead.
  r.on('error', () => {});
  return r;
}

/** What a server or worker should hear about the Redis it was given. */
export async function redisWarnings(redis: Redis): Promise<string[]> {
  const out: string[] = [];
  const info = await redis.info();
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
  const policy = field('maxmemory_policy');
  if (policy && policy !== 'noeviction')
    out.push(
      `Redis maxmemory-policy is '${policy}': Redis may evict queued jobs and blobs under memory pressure; ` +
        "set 'maxmemory-policy noeviction' (docs/deployment.md)",
    );
  if (field('aof_enabled') === '0')
    out.push("Redis has appendonly off: queued jobs are lost if Redis crashes; set 'appendonly yes' (docs/deployment.md)");
  return out;
}

/** Resolves once the connection is ready (or rejects after `timeoutMs`). */
export async function waitReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      redis.off('ready', ok);
      reject(new Error(`could not connect to Redis within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const ok = () => {
      clearTimeout(timer);
      resolve();
    };
    redis.once('ready', ok);
  });
}
