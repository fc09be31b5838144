/**
 * The CUDA kernels' build-time resource report: `build/cuda-resources.json`, written by the CMake build from
 * ptxas -v (native/cuda/tools/cuda_resources.cpp): registers, spills, shared memory and CTAs per SM of every
 * kernel instantiation on every compiled architecture. `xpsr doctor --verbose` prints it through
 * cudaResourceLines(); a missing file (CPU-only build) is a one-line note, never an error.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from './native.js';

export interface CudaKernelResources {
  name: string;
  arch: string;
  file: string;
  family: string;
  hot: boolean;
  registers: number;
  spill_stores: number;
  spill_loads: number;
  stack_frame: number;
  static_smem: number;
  dynamic_smem: number;
  threads: number;
  barriers: number;
  ctas_per_sm: Record<string, number>;
}
export interface CudaResourceReport {
  compiler: string;
  architectures: string[];
  summary: { kernels: number; max_registers: number; with_spills: number; hot_with_spills: number };
  kernels: CudaKernelResources[];
}

/** The report of this package's build (or of `file`), or null when it was built without CUDA. */
export function readCudaResources(file = path.join(packageRoot, 'build', 'cuda-resources.json')): CudaResourceReport | null {
  if (!existsSync(file)) return null;
  const r = JSON.parse(readFileSync(file, 'utf8')) as CudaResourceReport;
  if (!Array.isArray(r.kernels) || !r.summary) throw new Error(`${file} is not a CUDA resource report`);
  return r;
}

/** "gemm_kernel<128, 256, 2, 4, RowsVec>" from the demangled signature. */
export function shortKernelName(name: string): string {
  const modes = ['RowsVec', 'RowsScalar', 'ConvVec', 'ConvScalar'];
  return name
    .replace(/^void /, '')
    .replace(/xpsr::cuda::(\(anonymous namespace\)::)?/g, '')
    .replace(/\(AMode\)(\d)/g, (_m, d: string) => modes[Number(d)] ?? d)
    .replace(/\(.*$/, '');
}

/**
 * Lines for `xpsr doctor`: one summary line; with `verbose`, one line per hot kernel (GEMM/conv tiles,
 * attention, norms, elementwise) and every kernel that spills.
 */
export function cudaResourceLines(report: CudaResourceReport | null, verbose = false): string[] {
  if (!report) return ['CUDA kernels: no resource report (built without the CUDA backend)'];
  const s = report.summary;
  const spills = report.kernels.filter((k) => k.spill_stores + k.spill_loads > 0);
  const lines = [
    `CUDA kernels: ${s.kernels} instantiations for ${report.architectures.join(', ')} (${report.compiler}); ` +
      `registers up to ${s.max_registers}; ${s.with_spills === 0 ? 'no spills' : `${s.with_spills} spill (${s.hot_with_spills} hot)`}`,
  ];
  if (!verbose) return lines;
  const shown = report.kernels.filter((k) => k.hot || k.spill_stores + k.spill_loads > 0);
  for (const k of shown) {
    const smem = k.static_smem + Math.max(0, k.dynamic_smem);
    const occ = Object.entries(k.ctas_per_sm)
      .map(([a, n]) => `${a}:${n}`)
      .join(' ');
    const spill = k.spill_stores + k.spill_loads > 0 ? `  SPILLS ${k.spill_stores}/${k.spill_loads} B` : '';
    lines.push(
      `  ${k.arch}  ${shortKernelName(k.name).padEnd(44)} ${String(k.registers).padStart(3)} regs  ` +
        `${(smem / 1024).toFixed(1).padStart(5)} KiB smem  ${String(k.threads).padStart(3)} thr  CTAs/SM ${occ}${spill}`,
    );
  }
  if (spills.length === 0) lines.push('  no kernel spills registers to local memory');
  return lines;
}
