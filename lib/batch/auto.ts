/**
 * `batchSize: 'auto'`: the largest batch whose planned step activations (Engine.planStep: the arena the
 * engine would allocate, known without running anything) fit a memory budget. The default budget is a
 * share of the memory free on the device the engine runs on.
 */
import { freemem } from 'node:os';
import { cudaMemory } from '../engine/device-memory.js';

/** Share of the free memory that 'auto' plans with by default. */
export const AUTO_MEMORY_SHARE = 0.8;

/**
 * The largest b in 1..cap with bytesFor(b) <= budget, or 0 when even one image does not fit. bytesFor
 * must grow with b; it is asked about O(log cap) sizes.
 */
export async function largestFittingBatch(cap: number, budgetBytes: number, bytesFor: (b: number) => Promise<number> | number): Promise<number> {
  if ((await bytesFor(1)) > budgetBytes) return 0;
  if (cap <= 1 || (await bytesFor(cap)) <= budgetBytes) return Math.max(1, cap);
  let lo = 1; // fits
  let hi = cap; // does not fit
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if ((await bytesFor(mid)) <= budgetBytes) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Free memory of a device in bytes: the CUDA device's free memory, or the host's available memory. */
export function freeDeviceMemory(device: string): number {
  return cudaMemory(device)?.free ?? freemem();
}

/** The default memory budget of 'auto' on a device. */
export function defaultMemoryBudget(device: string): number {
  return Math.floor(freeDeviceMemory(device) * AUTO_MEMORY_SHARE);
}
