/**
 * Memory of the CUDA device a device name refers to: `cuda` (= cuda:0), `cuda:1`, an engine slot `cuda:1#2`,
 * or any of these after a worker's name (`w1/cuda:0`). One place for the name parsing that the batch sizing,
 * `xpsr bench` and the metrics all need.
 */
import { loadNative } from '../native.js';

/** Total and free bytes of the CUDA device `device` names; null for the CPU, an unknown index or no driver. */
export function cudaMemory(device: string): { total: number; free: number } | null {
  const m = /^cuda(?::(\d+))?(#\d+)?$/.exec(device.slice(device.lastIndexOf('/') + 1));
  if (!m) return null;
  let list: { index: number; totalMemory: number; freeMemory: number }[];
  try {
    list = loadNative().listDevices().cuda;
  } catch {
    return null;
  }
  const d = list.find((x) => x.index === Number(m[1] ?? 0));
  return d ? { total: d.totalMemory, free: d.freeMemory } : null;
}
