/**
 * `xpsr doctor [--sd DIR|FILE|REPO_ID --xpsr DIR | --model DIR | --weights DIR]`: prints the build, the
 * backends, the CPU features and the GPUs, and (with weights) what each component is read from and every
 * tensor checked — names, shapes, dtypes, NaN/Inf — without running anything (lib/weights/describe.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadNative, packageRoot } from '../native.js';
import { checkWeightsReport } from '../weights/index.js';

export async function runDoctorCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: { sd: { type: 'string' }, xpsr: { type: 'string' }, model: { type: 'string' }, weights: { type: 'string' },
      variant: { type: 'string' }, 'sd-config': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (v.help) {
    process.stdout.write('Usage: xpsr doctor [--sd DIR|FILE|REPO_ID] [--xpsr DIR|REPO_ID] [--model DIR] [--variant fp16] [--sd-config DIR]\n');
    return 0;
  }
  const out = (s: string) => process.stdout.write(s + '\n');
  let problems = 0;
  const pkg = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  out(`xpsr-native ${pkg.version}  (Node ${process.version}, ${process.platform}-${process.arch})`);
  try {
    const addon = loadNative();
    const info = addon.systemInfo();
    out(`engine addon: OK (${path.join(packageRoot, 'build', 'Release', 'xpsr.node')})`);
    out(`backends built: ${info.backends.join(', ')}`);
    out(`CPU: ${info.hardwareThreads} hardware threads; features: ${info.cpuFeatures.join(' ') || 'none detected'}; ${info.cpuBackend}`);
    const devs = addon.listDevices();
    if (devs.cuda.length === 0) out(`GPUs: none usable (${devs.reason})`);
    for (const d of devs.cuda)
      out(`GPU ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} free)`);
  } catch (e) {
    problems++;
    out(`engine addon: NOT LOADED\n${(e as Error).message}`);
  }
  const captionerAddon = ['build-captioner/Release', 'build-captioner'].map((d) => path.join(packageRoot, d)).find((d) => existsSync(d));
  out(`captioner addon: ${captionerAddon ? `built (${captionerAddon})` : 'not built (XPSR_CAPTIONER=off, or the build failed)'}`);

  const model = v.model ?? v.weights;
  if (!v.sd && !v.xpsr && !model) return problems ? 1 : 0;
  problems += await checkWeightsReport({ sd: v.sd, xpsr: v.xpsr, model, variant: v.variant, sdConfig: v['sd-config'] }, out);
  out(problems ? `\ndoctor: ${problems} problem(s)` : '\ndoctor: all checks passed');
  return problems ? 1 : 0;
}
