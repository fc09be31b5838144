/**
 * `xpsr doctor [--sd DIR --xpsr DIR | --model DIR | --weights DIR]`: prints the build, the backends, the
 * CPU features and the GPUs, and (with weights) checks every component tensor by tensor — names,
 * shapes, dtypes, NaN/Inf — without running anything.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadNative, packageRoot } from '../native.js';
import { describeBuildInfo, describeOrigin, findAddon, loadedAddons } from '../addon-loader.js';
import { captionerAddonSpec, captionerDisabledByEnv } from '../captioners/native.js';
import { Engine } from '../engine/engine.js';
import { resolveComponents } from '../xpsr.js';
import { ClipTokenizer } from '../tokenizer/index.js';

export async function runDoctorCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: { sd: { type: 'string' }, xpsr: { type: 'string' }, model: { type: 'string' }, weights: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (v.help) {
    process.stdout.write('Usage: xpsr doctor [--sd DIR --xpsr DIR | --model DIR | --weights DIR]\n');
    return 0;
  }
  const out = (s: string) => process.stdout.write(s + '\n');
  let problems = 0;
  const pkg = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  out(`xpsr-native ${pkg.version}  (Node ${process.version}, ${process.platform}-${process.arch})`);
  try {
    const addon = loadNative();
    const info = addon.systemInfo();
    const from = loadedAddons().find((a) => path.basename(a.file) === 'xpsr.node');
    out(`engine addon: OK, ${from ? describeOrigin(from) : 'loaded'}`);
    out(`built with: ${from?.buildInfo ? describeBuildInfo(from.buildInfo) : 'unknown (no build-info.json next to the addon)'}`);
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
  const captioner = captionerDisabledByEnv() ? undefined : findAddon(captionerAddonSpec('cpu'));
  out(`captioner addon: ${captioner ? describeOrigin({ ...captioner, file: path.dirname(captioner.file) }) : 'not available (XPSR_CAPTIONER=off, not built, or built for another node-llama-cpp)'}`);

  const model = v.model ?? v.weights;
  if (!v.sd && !v.xpsr && !model) return problems ? 1 : 0;
  out('\nweights check (tensor by tensor, nothing is run):');
  let comps;
  try {
    comps = resolveComponents({ sd: v.sd, xpsr: v.xpsr, model });
  } catch (e) {
    out(`  FAIL ${(e as Error).message}`);
    return 1;
  }
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const checks: [string, 'text_encoder' | 'vae' | 'unet' | 'controlnet', string][] = [
      ['text_encoder', 'text_encoder', comps.textEncoder], ['vae', 'vae', comps.vae], ['unet', 'unet', comps.unet], ['controlnet', 'controlnet', comps.controlnet],
    ];
    for (const [name, kind, dir] of checks) {
      const t0 = performance.now();
      try {
        const info = await engine.checkWeights(kind, dir);
        out(`  OK   ${name.padEnd(13)} ${info.tensors} tensors  ${info.description}  (${((performance.now() - t0) / 1000).toFixed(1)} s)  ${dir}`);
      } catch (e) {
        problems++;
        out(`  FAIL ${name.padEnd(13)} ${(e as Error).message.replace(/\n/g, '\n       ')}`);
      }
    }
    try {
      const tok = await ClipTokenizer.fromDirectory(comps.tokenizer);
      out(`  OK   tokenizer     ${tok.vocabSize} tokens  ${comps.tokenizer}`);
    } catch (e) {
      problems++;
      out(`  FAIL tokenizer     ${(e as Error).message}`);
    }
    out(`  ${comps.scheduler ? 'OK  ' : 'NOTE'} scheduler     ${comps.scheduler ?? 'absent: the SD-1.5 DDPM settings will be used'}`);
  } finally {
    engine.dispose();
  }
  out(problems ? `\ndoctor: ${problems} problem(s)` : '\ndoctor: all checks passed');
  return problems ? 1 : 0;
}
