/**
 * The weights part of `xpsr doctor`: where each component comes from (folder, single file, Hugging Face
 * cache snapshot, variant), what a single file holds and which of it is used or ignored, then every
 * network checked tensor by tensor (names, shapes, dtypes, NaN/Inf) without running anything.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadSchedulerConfig } from '../schedulers/index.js';
import { Engine } from '../engine/engine.js';
import { loadNative, type NativeWeightsInfo } from '../native.js';
import { resolveWeights, type ResolvedWeights, type WeightsOptions } from './resolve.js';
import { BUNDLED_TOKENIZER_DIR, loadTokenizer } from './tokenizer.js';

function size(bytes: number): string {
  return bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(2)} GiB`
    : bytes >= 2 ** 20
      ? `${(bytes / 2 ** 20).toFixed(1)} MiB`
      : `${(bytes / 1024).toFixed(1)} KiB`;
}
const dtypes = (d: Record<string, number>) => Object.keys(d).sort().join('+') || 'no tensors';

/** Lines describing an original-layout single file: layout, dtype, what is used and what is ignored. */
export function describeSingleFile(info: NativeWeightsInfo): string[] {
  const lines = [
    `${info.singleFile ? 'original Stable Diffusion single file (CompVis/LDM names)' : 'not a Stable Diffusion single file'}, ` +
      `${info.format}, ${dtypes(info.dtypes)}, ${info.tensors} tensors, ${size(info.bytes)}`,
  ];
  if (info.foreign) lines.push(`refused: ${info.foreign}`);
  for (const g of info.groups) {
    const what = g.used ? 'uses   ' : 'ignores';
    const pre = g.prefix ? `${g.prefix}*` : '(other names)';
    const level =
      g.prefix === 'cond_stage_model.transformer.' ? (info.textModelLevel ? ' (with text_model.)' : ' (without the text_model. level)') : '';
    lines.push(`${what} ${g.role}: ${pre}${level}, ${g.tensors} tensors, ${dtypes(g.dtypes)}, ${size(g.bytes)}${g.used ? '' : ' (never read)'}`);
  }
  if (info.positionIds) lines.push(`position_ids buffer: ${info.positionIds}`);
  return lines;
}

/** Where the SD parts come from, in words. */
function sdLines(r: ResolvedWeights): string[] {
  const lines: string[] = [];
  for (const s of r.snapshots) lines.push(`${s.option}: ${s.repoId} = Hugging Face cache snapshot ${s.dir} (revision ${s.revision})`);
  if (r.sdLayout === 'single file') {
    const info = loadNative().inspectWeights(r.textEncoder.path);
    lines.push(`sd: ${r.textEncoder.path}`, ...describeSingleFile(info).map((l) => `  ${l}`));
    lines.push(`  tokenizer: ${r.tokenizer ?? `the SD-1.5 CLIP tokenizer shipped with xpsr-native (${BUNDLED_TOKENIZER_DIR})`}`);
    lines.push(`  scheduler: ${r.scheduler ?? "SD-1.5's scheduler config"}`);
    for (const [name, c] of [
      ['text_encoder', r.textEncoder],
      ['vae', r.vae],
    ] as const)
      lines.push(`  ${name} config: ${c.configJson ? 'given (sdConfig)' : "derived from the tensor shapes (SD-1.5's)"}`);
  } else if (r.textEncoder.path) {
    lines.push(`sd: diffusers folder ${path.dirname(r.textEncoder.path)}${r.variant ? `, variant ${r.variant} preferred` : ''}`);
  }
  return lines;
}

/** The files the engine reads for a component, with their dtypes (folders only). */
function filesOf(kind: string, dir: string, variant?: string): string {
  try {
    const native = loadNative();
    return native
      .findWeightFiles(dir, kind, variant)
      .map((f) => `${path.basename(f)} ${dtypes(native.inspectWeights(f).dtypes)}`)
      .join(', ');
  } catch {
    return '';
  }
}

/**
 * Prints the weights report and checks every network; returns the number of problems. Only the parts the
 * options name are checked (`--sd` alone: text encoder, VAE, tokenizer, scheduler).
 */
/**
 * `describe` renders an error for a FAIL line (default: message and [code]); the CLI passes its own, which
 * names flags instead of option names.
 */
export async function checkWeightsReport(
  o: WeightsOptions,
  out: (line: string) => void,
  describe: (e: unknown) => string = (e) => `${(e as Error).message} [${(e as { code?: string }).code ?? 'ERR_INTERNAL'}]`,
): Promise<number> {
  out('\nweights check (tensor by tensor, nothing is run):');
  const need = { sd: o.sd !== undefined || o.model !== undefined, xpsr: o.xpsr !== undefined || o.model !== undefined };
  if (!need.sd) out('  --   text_encoder, tokenizer, vae, scheduler not checked (give --sd)');
  if (!need.xpsr) out('  --   unet, controlnet not checked (give --xpsr)');
  let r: ResolvedWeights;
  try {
    r = resolveWeights(o, need);
    for (const l of need.sd ? sdLines(r) : r.snapshots.map((s) => `${s.option}: ${s.repoId} = Hugging Face cache snapshot ${s.dir}`)) out(`  ${l}`);
  } catch (e) {
    out(`  FAIL ${describe(e).replace(/\n/g, '\n       ')}`);
    return 1;
  }
  let problems = 0;
  const engine = await Engine.create({ device: 'cpu' });
  try {
    const checks: ['text_encoder' | 'vae' | 'unet' | 'controlnet', { path: string; configJson?: string }][] = [];
    if (need.sd) checks.push(['text_encoder', r.textEncoder], ['vae', r.vae]);
    if (need.xpsr) checks.push(['unet', r.unet], ['controlnet', r.controlnet]);
    for (const [kind, c] of checks) {
      const t0 = performance.now();
      try {
        const info = await engine.checkWeights(kind, c.path, { variant: r.variant, config: c.configJson });
        const files = r.sdLayout === 'single file' && (kind === 'text_encoder' || kind === 'vae') ? '' : filesOf(kind, c.path, r.variant);
        out(
          `  OK   ${kind.padEnd(13)} ${info.tensors} tensors  ${info.description}  (${((performance.now() - t0) / 1000).toFixed(1)} s)  ${c.path}${files ? ` [${files}]` : ''}`,
        );
      } catch (e) {
        problems++;
        out(`  FAIL ${kind.padEnd(13)} ${describe(e).replace(/\n/g, '\n       ')}`);
      }
    }
    if (need.sd) {
      try {
        const tok = await loadTokenizer(r.tokenizer);
        out(`  OK   tokenizer     ${tok.vocabSize} tokens  ${r.tokenizer ?? `bundled (${BUNDLED_TOKENIZER_DIR})`}`);
      } catch (e) {
        problems++;
        out(`  FAIL tokenizer     ${describe(e)}`);
      }
      const sc = r.scheduler && path.join(r.scheduler, 'scheduler_config.json');
      if (!sc || !existsSync(sc)) out('  NOTE scheduler     absent: the SD-1.5 DDPM settings will be used');
      else {
        try {
          const cfg = loadSchedulerConfig(sc);
          out(`  OK   scheduler     ${String(cfg._class_name ?? 'scheduler')} config, usable by ddpm, dpmpp and unipc  ${r.scheduler}`);
        } catch (e) {
          problems++;
          out(`  FAIL scheduler     ${describe(e)}`);
        }
      }
    }
  } finally {
    engine.dispose();
  }
  return problems;
}
