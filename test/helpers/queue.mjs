// Helpers for the Redis queue tests: `xpsr worker` child processes (the real CLI), job polling that rides
// out a Redis restart, and reading the queue's records straight from Redis.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { Redis } from 'ioredis';
import { model, root } from './fixtures.mjs';

export const CLI = path.join(root, 'dist', 'lib', 'cli', 'main.js');

/** Short locks so that a killed worker's job is taken over within seconds (production default: 30 s). */
export const FAST_LOCKS = ['--lock-duration', '2', '--stalled-interval', '1'];

/**
 * Starts `xpsr worker` on the tiny model (cpu, one thread). `ready` resolves when its engine is loaded and it
 * consumes jobs; `exited` with { code, signal }.
 */
export function spawnWorker(redisUrl, { name, args = [] } = {}) {
  const proc = spawn(
    process.execPath,
    [CLI, 'worker', '--redis', redisUrl, '--model', model, '--device', 'cpu', '--threads', '1', '--name', name, ...FAST_LOCKS, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  let onLine = () => {};
  const ready = new Promise((resolve, reject) => {
    onLine = () => {
      if (/ready: models loaded/.test(stderr)) resolve();
    };
    proc.once('exit', (code, signal) => reject(new Error(`worker ${name} exited before ready (${code ?? signal}): ${stderr}`)));
  });
  ready.catch(() => undefined);
  proc.stderr.on('data', (d) => {
    stderr += d;
    onLine();
  });
  proc.stdout.on('data', () => undefined);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    proc,
    name,
    ready,
    exited,
    get stderr() {
      return stderr;
    },
    kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
}

/** fetch() that retries network errors and 5xx answers (a Redis restart makes reads wait or fail briefly). */
export async function fetchRetry(url, init = {}, { tries = 100, delayMs = 100 } = {}) {
  let last;
  for (let i = 0; i < tries; i++) {
    try {
      const res = await fetch(url, init);
      if (res.status < 500) return res;
      last = new Error(`HTTP ${res.status}: ${await res.text()}`);
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, delayMs));
  }
  throw last;
}

/** A plain Redis client for checks (final records, blob keys). */
export function redisClient(url) {
  const r = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  r.on('error', () => undefined);
  return r;
}

/** Keys matching `pattern` (SCAN, for small test databases). */
export async function keys(redis, pattern) {
  const out = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...batch);
  } while (cursor !== '0');
  return out;
}
