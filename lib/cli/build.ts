/**
 * `xpsr build [--cuda auto|on|off] [--cuda-archs 80;90] [--no-captioner] [--jobs N]`: builds the native
 * addons from source inside the installed package (build/Release/xpsr.node, build-captioner/Release/), for
 * platforms without prebuilt binaries or to use a local toolchain. The loader prefers such a local build to
 * the prebuilt @xpsr-native/<platform> package. Needs CMake >= 3.18 and a C++17 compiler (nvcc for CUDA).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../native.js';
import { parseFlags } from './common.js';

const HELP = `Usage: xpsr build [options]

Builds the native addons from source into ${path.join(packageRoot, 'build')} (used before the prebuilt package).
Needs CMake >= 3.18 and a C++17 compiler; nvcc (CUDA toolkit) for the CUDA backend.

Options:
  --cuda auto|on|off    build the CUDA backend when nvcc is found (auto), always, never
  --cuda-archs LIST     CUDA architectures, e.g. "80;86;89;90" (default 80;90; PTX of the lowest is added)
  --no-captioner        skip the in-process LLaVA captioner addon
  --jobs N              parallel compile jobs (default: all CPUs)
`;

export async function runBuildCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('build', argv, {
    cuda: { type: 'string' },
    'cuda-archs': { type: 'string' },
    'no-captioner': { type: 'boolean' },
    jobs: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (v.cuda !== undefined && !['auto', 'on', 'off'].includes(v.cuda)) {
    process.stderr.write(`xpsr build: --cuda must be auto, on or off (got '${v.cuda}')\n`);
    return 2;
  }
  const script = path.join(packageRoot, 'scripts', 'build-native.mjs');
  if (!existsSync(script)) throw new Error(`the build script is missing (${script}); reinstall xpsr-native`);
  const env = { ...process.env };
  if (v.cuda) env.XPSR_CUDA = v.cuda;
  if (v['cuda-archs']) env.XPSR_CUDA_ARCHS = v['cuda-archs'];
  if (v.jobs) env.XPSR_BUILD_JOBS = v.jobs;
  // In an app only the addon is built; a clone also builds the native test runner and benchmark.
  const inApp = packageRoot.split(path.sep).includes('node_modules');
  const args = [script, '--force', ...(inApp ? ['--addon-only'] : []), ...(v['no-captioner'] ? ['--no-captioner'] : [])];
  const r = spawnSync(process.execPath, args, { cwd: packageRoot, stdio: 'inherit', env });
  if (r.status !== 0) return 1;
  process.stdout.write(`xpsr build: done; \`xpsr doctor\` shows the addon in use\n`);
  return 0;
}
