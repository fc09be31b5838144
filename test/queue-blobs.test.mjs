// The blob stores of the Redis queue (lib/queue/blobs.ts) with a real Redis and a real directory: binary
// round trips, the create-if-absent write that makes results idempotent, the size limit, expiry and cleanup.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DirBlobStore, RedisBlobStore } from '../dist/lib/queue/blobs.js';
import { QueueKeys } from '../dist/lib/queue/protocol.js';
import { redisClient } from './helpers/queue.mjs';
import { startRedis } from './helpers/redis.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let redis;
let client;
test.before(async () => {
  redis = await startRedis();
  client = redisClient(redis.url);
});
test.after.always(async () => {
  client?.disconnect();
  await redis?.stop();
});

test.serial('Redis blobs: binary round trip, create-if-absent, size limit, expiry by TTL', async (t) => {
  const keys = new QueueKeys('blobs-redis');
  const store = new RedisBlobStore(client, keys, 1024);
  const data = Buffer.concat([Buffer.from([0, 255, 0, 10, 13]), randomBytes(500)]);
  t.true(await store.put('in:a', data, 60_000));
  t.deepEqual(await store.get('in:a'), data);
  t.is(await store.get('in:missing'), undefined);

  // The idempotent result write: the first writer wins, a second attempt keeps the first bytes.
  t.true(await store.put('out:a', data, 60_000, { ifAbsent: true }));
  t.false(await store.put('out:a', randomBytes(10), 60_000, { ifAbsent: true }));
  t.deepEqual(await store.get('out:a'), data);

  const e = await t.throwsAsync(store.put('out:big', Buffer.alloc(1025), 60_000));
  t.is(e.code, 'ERR_BLOB_TOO_LARGE');
  t.regex(e.message, /1025 bytes.*1024/);
  t.is(await client.exists(keys.blob('out:big')), 0);

  t.true(await store.put('out:short', data, 150));
  t.deepEqual(await store.get('out:short'), data);
  const ttl = await client.pttl(keys.blob('out:short'));
  t.true(ttl > 0 && ttl <= 150, `a TTL is set (${ttl} ms)`);
  await sleep(400);
  t.is(await store.get('out:short'), undefined);
  t.is(await client.exists(keys.blob('out:short')), 0, 'Redis removed the expired key');

  await store.delete('in:a');
  t.is(await client.exists(keys.blob('in:a')), 0);
});

test.serial('directory blobs: round trip, create-if-absent, expiry, sweep deletes expired files only', async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'xpsr-blobs-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const store = new DirBlobStore(root, new QueueKeys('blobs-dir'));
  const files = () => readdirSync(store.dir).sort();
  const data = randomBytes(3000);
  t.true(await store.put('in:a', data, 60_000));
  t.deepEqual(await store.get('in:a'), data);
  t.is(await store.get('in:missing'), undefined);
  t.true(await store.put('out:a', data, 60_000, { ifAbsent: true }));
  t.false(await store.put('out:a', randomBytes(10), 60_000, { ifAbsent: true }));
  t.deepEqual(await store.get('out:a'), data);
  t.deepEqual(files(), ['in_a.blob', 'out_a.blob'], 'no temporary files left behind');

  // Expired: invisible at once, deleted by the next read or sweep.
  t.true(await store.put('out:short', data, 150));
  t.true(await store.put('in:short', data, 150));
  t.deepEqual(await store.get('out:short'), data);
  await sleep(300);
  t.is(await store.get('out:short'), undefined);
  t.false(files().includes('out_short.blob'), 'the read deleted the expired file');
  t.true(files().includes('in_short.blob'));
  t.is(await store.sweep(), 1);
  t.deepEqual(files(), ['in_a.blob', 'out_a.blob'], 'sweep deleted the expired file and kept the live ones');

  // An expired blob does not block a new create-if-absent write.
  t.true(await store.put('out:again', data, 100, { ifAbsent: true }));
  await sleep(250);
  t.true(await store.put('out:again', Buffer.from('new'), 60_000, { ifAbsent: true }));
  t.deepEqual(await store.get('out:again'), Buffer.from('new'));

  await store.delete('in:a');
  t.is(await store.get('in:a'), undefined);
  await t.throwsAsync(store.get('../etc/passwd'), { code: 'ERR_INVALID_ARGUMENT' });
});
