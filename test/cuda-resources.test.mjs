// The CUDA resource report (build/cuda-resources.json from ptxas -v) as `xpsr doctor --verbose` prints it:
// canned reports, a missing report (CPU-only build) and, when this build has the CUDA backend, the real one.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cudaResourceLines, readCudaResources, shortKernelName } from '../dist/lib/cuda-resources.js';
import { packageRoot } from '../dist/lib/native.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'xpsr-res-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const kernel = (over) => ({
  name: 'void xpsr::cuda::gemm_kernel<128, 256, 2, 4, (xpsr::cuda::AMode)0>(xpsr::cuda::GemmKernelParams)',
  arch: 'sm_90',
  file: 'gemm.cu',
  family: 'gemm',
  hot: true,
  registers: 222,
  spill_stores: 0,
  spill_loads: 0,
  stack_frame: 0,
  static_smem: 0,
  dynamic_smem: 98304,
  threads: 256,
  barriers: 1,
  ctas_per_sm: { sm_90: 1 },
  ...over,
});

test('a canned report: summary line, verbose kernel lines, spills flagged', (t) => {
  const file = path.join(dir, 'r.json');
  writeFileSync(
    file,
    JSON.stringify({
      compiler: 'nvcc 13.0.88',
      architectures: ['sm_80', 'sm_90'],
      summary: { kernels: 3, max_registers: 222, with_spills: 1, hot_with_spills: 0 },
      kernels: [
        kernel({}),
        kernel({
          name: 'void xpsr::cuda::(anonymous namespace)::helper<1>(float*)',
          hot: false,
          family: 'other',
          registers: 40,
          spill_stores: 8,
          spill_loads: 8,
          dynamic_smem: -1,
          threads: 0,
          ctas_per_sm: {},
        }),
        kernel({
          name: 'void xpsr::cuda::attention_fa_kernel<160, 4, 1, 32, true>(xpsr::cuda::AttnBatch)',
          arch: 'sm_80',
          registers: 172,
          dynamic_smem: 43008,
          threads: 128,
          ctas_per_sm: { sm_80: 2, sm_86: 2, sm_89: 2 },
        }),
      ],
    }),
  );
  const r = readCudaResources(file);
  const short = cudaResourceLines(r);
  t.is(short.length, 1);
  t.regex(short[0], /3 instantiations for sm_80, sm_90 \(nvcc 13\.0\.88\); registers up to 222; 1 spill \(0 hot\)/);
  const long = cudaResourceLines(r, true);
  t.is(long.length, 4); // summary + 2 hot kernels + the spilling helper
  t.true(
    long.some(
      (l) =>
        l.includes('gemm_kernel<128, 256, 2, 4, RowsVec>') && l.includes('222 regs') && l.includes('96.0 KiB smem') && l.includes('CTAs/SM sm_90:1'),
    ),
  );
  t.true(long.some((l) => l.includes('attention_fa_kernel<160, 4, 1, 32, true>') && l.includes('sm_80:2 sm_86:2 sm_89:2')));
  t.true(long.some((l) => l.includes('helper<1>') && l.includes('SPILLS 8/8 B')));
});

test('kernel names are shortened with the A mode spelled out', (t) => {
  t.is(
    shortKernelName('void xpsr::cuda::gemm_kernel<64, 64, 2, 2, (xpsr::cuda::AMode)3>(xpsr::cuda::GemmKernelParams)'),
    'gemm_kernel<64, 64, 2, 2, ConvScalar>',
  );
  t.is(shortKernelName('xpsr::cuda::(anonymous namespace)::gn_finalize(float const*, float*)'), 'gn_finalize');
});

test('no report (built without CUDA) is a note, not an error; a malformed one is an error', (t) => {
  t.is(readCudaResources(path.join(dir, 'absent.json')), null);
  t.deepEqual(cudaResourceLines(null), ['CUDA kernels: no resource report (built without the CUDA backend)']);
  const bad = path.join(dir, 'bad.json');
  writeFileSync(bad, '{"kernels": 3}');
  t.throws(() => readCudaResources(bad), { message: /not a CUDA resource report/ });
});

const real = path.join(packageRoot, 'build', 'cuda-resources.json');
const realTest = existsSync(real) ? test : test.skip;
realTest(`this build's report is consistent${existsSync(real) ? '' : ' [skipped: built without the CUDA backend]'}`, (t) => {
  const r = readCudaResources();
  t.true(r.kernels.length > 0 && r.kernels.length === r.summary.kernels);
  t.is(r.summary.with_spills, r.kernels.filter((k) => k.spill_stores + k.spill_loads > 0).length);
  t.is(r.summary.hot_with_spills, 0, 'a hot kernel spills registers');
  // every GEMM tile x A mode on every architecture, each with its dynamic shared memory and occupancy
  const gemm = r.kernels.filter((k) => k.name.includes('gemm_kernel<'));
  t.is(gemm.length, 20 * r.architectures.length);
  t.true(gemm.every((k) => k.dynamic_smem > 0 && Object.values(k.ctas_per_sm).every((n) => n >= 1)));
  t.log(cudaResourceLines(r)[0]);
});
