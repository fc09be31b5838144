/**
 * The final record of a job (protocol.ts): written once, read by every server. Whoever ends a job (the
 * worker that ran it, or the server that cancelled it while queued) calls settle(); SET NX makes the first
 * writer win, so a job retried after its worker died, or cancelled while finishing, still ends exactly once
 * and the client sees one result.
 */
import type { Redis } from 'ioredis';
import type { JobError } from '../server/jobs.js';
import type { FinalRecord, QueueKeys } from './protocol.js';

/** Writes `record` unless the job already has one; returns the record that holds (ours or the earlier one). */
export async function settle(redis: Redis, keys: QueueKeys, record: FinalRecord): Promise<{ record: FinalRecord; won: boolean }> {
  const ttl = Math.max(1, Math.ceil(record.expiresAt - Date.now()));
  const ok = await redis.set(keys.final(record.id), JSON.stringify(record), 'PX', ttl, 'NX');
  if (ok === 'OK') return { record, won: true };
  const earlier = await readFinal(redis, keys, record.id);
  return { record: earlier ?? record, won: !earlier };
}

export async function readFinal(redis: Redis, keys: QueueKeys, id: string): Promise<FinalRecord | undefined> {
  const text = await redis.get(keys.final(id));
  return text ? (JSON.parse(text) as FinalRecord) : undefined;
}

/** BullMQ keeps an error as one string: `CODE: message`. */
export function failureText(e: JobError): string {
  return `${e.code}: ${e.message}`;
}

/** The error of a BullMQ failedReason (ours are `CODE: message`; BullMQ's own, e.g. a stalled job, get `fallbackCode`). */
export function parseFailure(reason: string | undefined, fallbackCode: string): JobError {
  const m = /^(ERR_[A-Z0-9_]+): ([\s\S]*)$/.exec(reason ?? '');
  return m ? { code: m[1], message: m[2] } : { code: fallbackCode, message: reason || 'the job failed' };
}
