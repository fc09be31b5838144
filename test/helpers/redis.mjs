// A real Redis server for the queue tests (Debian's redis-server): each test starts its own on a free port
// with a temporary directory, append-only persistence, and kills it at the end. `restart()` kills it
// (SIGKILL: a crash, not a clean shutdown) and starts it again on the same port and data.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const REDIS_SERVER = process.env.XPSR_REDIS_SERVER ?? 'redis-server';

/** True when redis-server can be run (the tests fail with a clear message otherwise: CI installs it). */
export function haveRedis() {
  return spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' }).status === 0;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port, timeoutMs = 10_000) {
  const t0 = Date.now();
  for (;;) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.write('PING\r\n');
        c.once('data', (d) => {
          c.destroy();
          resolve(String(d).startsWith('+PONG'));
        });
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`redis-server did not answer on port ${port}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Starts redis-server. `config` adds directives (e.g. { 'maxmemory-policy': 'allkeys-lru' }).
 * Persistence: appendonly yes with appendfsync always, so every acknowledged write survives a crash.
 */
export async function startRedis(config = {}) {
  if (!haveRedis()) throw new Error(`${REDIS_SERVER} not found: install Debian's redis-server (apt-get install -y redis-server)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'xpsr-redis-'));
  const port = await freePort();
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--maxmemory-policy',
    'noeviction',
    '--protected-mode',
    'no',
    '--loglevel',
    'warning',
  ];
  for (const [k, v] of Object.entries(config)) args.push(`--${k}`, String(v));
  let proc;
  let log = '';
  const launch = async () => {
    proc = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout.on('data', (d) => (log += d));
    proc.stderr.on('data', (d) => (log += d));
    await waitForPort(port);
  };
  const kill = async (signal = 'SIGKILL') => {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get log() {
      return log;
    },
    /** Crash (SIGKILL) and start again on the same port and data after `downMs`. */
    async restart(downMs = 500) {
      await kill('SIGKILL');
      await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
    async stop() {
      await kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
