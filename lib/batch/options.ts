/**
 * Batching options: of an XPSR instance (dynamic batching of concurrent upscale() calls) and of
 * upscaleMany(). Validated here with the same messages as every other option.
 */
import { invalidOption } from '../errors.js';

/** Largest batch accepted as a number. */
export const MAX_BATCH = 64;
/** Largest batch 'auto' considers. */
export const AUTO_MAX_BATCH = 16;
/** Longest accepted batching delay (ms). */
export const MAX_BATCH_DELAY_MS = 60_000;

/** Dynamic batching of an instance's concurrent upscale() calls (XPSR.load({ batching }), setBatching()). */
export interface BatchingOptions {
  /**
   * Most images per denoising pass: 1 (default: every call runs alone), a number up to 64, or 'auto' (the
   * largest batch, up to 16, whose planned step activations fit `memoryBudgetMB`).
   */
  maxBatch?: number | 'auto';
  /**
   * How long the oldest waiting call waits for others of its size to fill its batch, in ms (default 0:
   * a batch takes the calls already waiting, and calls arriving while the engine is busy wait for the next).
   */
  maxDelayMs?: number;
  /**
   * Memory the batch may plan with, in MiB: the limit of 'auto', and of how many images one untiled VAE
   * call takes. Default: 80% of the device's free memory (CUDA) or of the host's available memory (CPU).
   */
  memoryBudgetMB?: number;
}

export interface ResolvedBatching {
  maxBatch: number | 'auto';
  maxDelayMs: number;
  memoryBudgetBytes?: number;
}

/** A batch size: an integer 1..64 or 'auto'. */
export function batchSizeOption(name: string, v: unknown, def: number | 'auto'): number | 'auto' {
  if (v === undefined) return def;
  if (v === 'auto') return v;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_BATCH)
    throw invalidOption(name, `an integer between 1 and ${MAX_BATCH} or 'auto'`, v);
  return v;
}

/** A memory budget in MiB, as bytes. */
export function memoryBudgetOption(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > 2 ** 24) throw invalidOption(name, 'a positive number of MiB up to 16777216', v);
  return v * 2 ** 20;
}

export function resolveBatching(o: BatchingOptions | undefined, name = 'batching'): ResolvedBatching {
  if (o === undefined) return { maxBatch: 1, maxDelayMs: 0 };
  if (o === null || typeof o !== 'object') throw invalidOption(name, 'an object { maxBatch, maxDelayMs, memoryBudgetMB }', o);
  const d = o.maxDelayMs;
  if (d !== undefined && (typeof d !== 'number' || !Number.isFinite(d) || d < 0 || d > MAX_BATCH_DELAY_MS))
    throw invalidOption(`${name}.maxDelayMs`, `a number of milliseconds between 0 and ${MAX_BATCH_DELAY_MS}`, d);
  return {
    maxBatch: batchSizeOption(`${name}.maxBatch`, o.maxBatch, 1),
    maxDelayMs: d ?? 0,
    memoryBudgetBytes: memoryBudgetOption(`${name}.memoryBudgetMB`, o.memoryBudgetMB),
  };
}
