/**
 * `xpsr doctor [--sd DIR] [--xpsr DIR] [--model DIR] [--device D]`: prints the build (compiler, glibc,
 * compiled CUDA architectures), the backends, the CPU features, the GPUs and the device a run would use;
 * then, for the weights it is given (flags, else XPSR_SD / XPSR_WEIGHTS / XPSR_MODEL), checks what
 * each component is read from (folder, single file, cached repo id; lib/weights/describe.ts) and every
 * tensor (names, shapes, dtypes, NaN/Inf), the tokenizer and the scheduler config, without running anything. Exit status 0 when every check passed, 1 otherwise, 2 for a usage error.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadNative, packageRoot } from '../native.js';
import { describeBuildInfo, describeOrigin, findAddon, loadedAddons } from '../addon-loader.js';
import { captionerAddonSpec, captionerDisabledByEnv } from '../captioners/native.js';
import { Engine } from '../engine/engine.js';
import { checkWeightsReport } from '../weights/index.js';
import { checkLoadOptions } from '../options.js';
import { EXIT, asUsage, describeError, parseFlags } from './common.js';

const HELP = `Usage: xpsr doctor [--sd DIR|FILE|REPO_ID] [--xpsr DIR|REPO_ID] [--model DIR] [--variant fp16] [--sd-config DIR]
                   [--device auto|cpu|cuda|cuda:N]

Prints the build, backends, CPU features, GPUs and the device a run would use. With weights, checks
every component without running anything: SD-1.5 (--sd: a diffusers folder with text_encoder, tokenizer,
vae, scheduler; an original-layout single file; or a repo id in the local Hugging Face cache),
the XPSR checkpoint (--xpsr: unet, controlnet), or one folder holding all (--model). Weights default
to the env variables XPSR_SD, XPSR_WEIGHTS and XPSR_MODEL, as for xpsr upscale.
Exit status: 0 all checks passed, 1 a problem was found, 2 usage error.
`;

export async function runDoctorCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('doctor', argv, {
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    model: { type: 'string' },
    weights: { type: 'string' },
    variant: { type: 'string' },
    'sd-config': { type: 'string' },
    device: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(HELP);
    return EXIT.OK;
  }
  const roots = {
    sd: v.sd ?? (v.xpsr || v.model || v.weights ? undefined : process.env.XPSR_SD),
    xpsr: v.xpsr ?? (v.sd || v.model || v.weights ? undefined : process.env.XPSR_WEIGHTS),
    model: v.model ?? v.weights ?? (v.sd || v.xpsr ? undefined : process.env.XPSR_MODEL),
  };
  const device = v.device ?? 'auto';
  asUsage(() => checkLoadOptions({ device, model: 'unused' }));

  const out = (s: string) => process.stdout.write(s + '\n');
  let problems = 0;
  const fail = (line: string) => {
    problems++;
    out(line);
  };
  const pkg = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  out(`xpsr-native ${pkg.version}  (Node ${process.version}, ${process.platform}-${process.arch})`);
  const env = ['XPSR_SD', 'XPSR_WEIGHTS', 'XPSR_MODEL', 'XPSR_NATIVE_ADDON', 'XPSR_CAPTIONER', 'XPSR_CAPTIONER_ADDON_DIR']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${process.env[k]}`);
  out(`environment: ${env.length ? env.join(' ') : 'no XPSR_* variables set'}`);
  try {
    const addon = loadNative();
    const info = addon.systemInfo();
    const from = loadedAddons().find((a) => path.basename(a.file) === 'xpsr.node');
    out(`engine addon: OK, ${from ? describeOrigin(from) : 'loaded'}`);
    out(`built with: ${from?.buildInfo ? describeBuildInfo(from.buildInfo) : 'unknown (no build-info.json next to the addon)'}`);
    out(`build: compiler ${info.compiler || 'unknown'}, glibc ${info.glibc || 'unknown'}`);
    out(`backends built: ${info.backends.join(', ')}`);
    const archs = info.cudaArchitectures;
    out(`CUDA architectures: ${!info.cudaBuilt ? 'none (built without CUDA)' : archs?.length ? archs.join(', ') : 'unknown'}`);
    out(`CPU: ${info.hardwareThreads} hardware threads; features: ${info.cpuFeatures.join(' ') || 'none detected'}; ${info.cpuBackend}`);
    const devs = addon.listDevices();
    if (devs.cuda.length === 0) out(`GPUs: none usable (${devs.reason})`);
    for (const d of devs.cuda)
      out(
        `GPU ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} free)`,
      );
    // the device a run would use: created exactly as XPSR.load does, then released
    const notes: string[] = [];
    try {
      const engine = await Engine.create({ device, onNotice: (m) => notes.push(m.replace(/^xpsr: /, '')) });
      out(`device: ${device} -> ${engine.device} (${engine.description})${notes.length ? `; ${notes.join('; ')}` : ''}`);
      engine.dispose();
    } catch (e) {
      fail(`device: ${device} -> FAIL ${describeError(e)}`);
    }
  } catch (e) {
    fail(`engine addon: NOT LOADED\n${(e as Error).message}`);
  }
  const captioner = captionerDisabledByEnv() ? undefined : findAddon(captionerAddonSpec('cpu'));
  out(
    `captioner addon: ${captioner ? describeOrigin({ ...captioner, file: path.dirname(captioner.file) }) : 'not available (XPSR_CAPTIONER=off, not built, or built for another node-llama-cpp)'}`,
  );

  if (!roots.sd && !roots.xpsr && !roots.model) {
    out(problems ? `\ndoctor: ${problems} problem(s)` : '\ndoctor: all checks passed (no weights given: --sd / --xpsr / --model)');
    return problems ? EXIT.FAILED : EXIT.OK;
  }
  problems += await checkWeightsReport({ ...roots, variant: v.variant, sdConfig: v['sd-config'] }, out, describeError);
  out(problems ? `\ndoctor: ${problems} problem(s)` : '\ndoctor: all checks passed');
  return problems ? EXIT.FAILED : EXIT.OK;
}
