/**
 * From XPSR.load's weight options to what each network is loaded from. Stable Diffusion 1.5 (`sd`) may be
 *   - a diffusers folder: text_encoder/, tokenizer/, vae/, scheduler/ (model_index.json, when present, is
 *     respected: the components it lists must be there and be SD-1.5's classes; those it marks absent are);
 *   - one original-layout file (v1-5-pruned-emaonly.safetensors, its -fp16 twin, a .ckpt): the engine reads
 *     the text encoder and the VAE out of it (native/engine/io/checkpoint_map.h); the tokenizer is the one
 *     shipped with the package and the scheduler config SD-1.5's, unless `sdConfig` names a folder with
 *     tokenizer/ or scheduler/ (and text_encoder/config.json, vae/config.json for files of other sizes);
 *   - a Hugging Face repo id found in the local cache (hf-cache.ts).
 * The XPSR checkpoint (`xpsr`) is a folder (unet/, controlnet/) or a repo id; `model` one folder with all.
 * `variant` ('fp16') prefers <stem>.fp16.safetensors in every component folder (the engine picks the file).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { XpsrError } from '../errors.js';
import { loadNative } from '../native.js';
import { isRepoId, resolveRepoSnapshot } from './hf-cache.js';

export interface WeightsOptions {
  sd?: string;
  xpsr?: string;
  model?: string;
  variant?: string;
  sdConfig?: string;
}

/** Where one network is loaded from (a component folder or a single file) and its config when given. */
export interface ComponentSource {
  path: string;
  configJson?: string;
}

export interface ResolvedWeights {
  /** What `sd` is: a diffusers folder or an original-layout single file. */
  sdLayout: 'diffusers folder' | 'single file';
  /** Hugging Face cache snapshots that repo ids resolved to. */
  snapshots: { option: string; repoId: string; dir: string; revision: string }[];
  textEncoder: ComponentSource;
  vae: ComponentSource;
  /** Tokenizer folder; undefined = the SD-1.5 CLIP tokenizer shipped with the package. */
  tokenizer?: string;
  /** Scheduler folder; undefined = SD-1.5's scheduler config. */
  scheduler?: string;
  unet: ComponentSource;
  controlnet: ComponentSource;
  variant?: string;
}

const SD_PARTS = ['text_encoder', 'tokenizer', 'vae'];
const XPSR_PARTS = ['unet', 'controlnet'];
/** Classes model_index.json may name for the parts XPSR takes from Stable Diffusion 1.5. */
const SD_CLASSES: Record<string, string[]> = {
  text_encoder: ['CLIPTextModel'],
  tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
  vae: ['AutoencoderKL'],
};

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** model_index.json of a folder root (parsed), or undefined. */
function modelIndex(root: string): Record<string, unknown> | undefined {
  const f = path.join(root, 'model_index.json');
  if (!existsSync(f)) return undefined;
  try {
    const j = JSON.parse(readFileSync(f, 'utf8')) as unknown;
    if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch (e) {
    throw new XpsrError('ERR_WEIGHTS_INVALID', `${f}: not valid JSON (${(e as Error).message})`);
  }
  throw new XpsrError('ERR_WEIGHTS_INVALID', `${f}: not a JSON object`);
}

/**
 * Checks a root's model_index.json and says whether it provides `sub`: listed with a class (the folder must
 * then exist), marked absent ([null, null]) or not listed (absent). Without model_index.json: the folder decides.
 */
function provides(root: string, sub: string): boolean {
  const index = modelIndex(root);
  if (!index) return isDir(path.join(root, sub));
  const where = path.join(root, 'model_index.json');
  for (const key of ['text_encoder_2', 'tokenizer_2'])
    if (Array.isArray(index[key]) && (index[key] as unknown[])[1])
      throw new XpsrError('ERR_UNSUPPORTED', `${where} lists ${key}: this is an SDXL-family pipeline; XPSR needs Stable Diffusion 1.5`);
  const entry = index[sub];
  if (!Array.isArray(entry) || entry[1] === null || entry[1] === undefined) return false;
  const cls = String(entry[1]);
  if (SD_CLASSES[sub] && !SD_CLASSES[sub].includes(cls))
    throw new XpsrError('ERR_UNSUPPORTED', `${where} says ${sub} is ${cls}; XPSR needs Stable Diffusion 1.5's ${SD_CLASSES[sub].join(' or ')}`);
  if (!isDir(path.join(root, sub)))
    throw new XpsrError('ERR_WEIGHTS_MISSING', `${where} lists ${sub} (${cls}) but ${path.join(root, sub)}/ is missing`);
  return true;
}

/** What a folder lacks to provide `parts` (undefined when complete): configs, weights (links resolving), vocab. */
export function missingParts(root: string, parts: string[], variant?: string): string | undefined {
  for (const sub of parts) {
    const dir = path.join(root, sub);
    if (!isDir(dir)) return `${sub}/ missing`;
    if (sub === 'tokenizer') {
      for (const f of ['vocab.json', 'merges.txt']) if (!isFile(path.join(dir, f))) return `${sub}/${f} missing`;
      continue;
    }
    if (!isFile(path.join(dir, 'config.json'))) return `${sub}/config.json missing`;
    let files: string[];
    try {
      files = loadNative().findWeightFiles(dir, sub, variant);
    } catch {
      return `${sub}/ has no weights file`;
    }
    for (const f of files) if (!isFile(f)) return `${path.relative(root, f)} missing`;
  }
  return undefined;
}

/**
 * Resolves the weight options. `need` limits the check to the SD part or the XPSR part (`xpsr doctor --sd`);
 * every missing component is listed in one ERR_WEIGHTS_MISSING.
 */
export function resolveWeights(o: WeightsOptions, need: { sd: boolean; xpsr: boolean } = { sd: true, xpsr: true }): ResolvedWeights {
  if (o.variant !== undefined && !/^[A-Za-z0-9_-]+$/.test(o.variant))
    throw new XpsrError('ERR_INVALID_OPTION', `Invalid option 'variant': expected a variant name such as 'fp16', got ${JSON.stringify(o.variant)}`);
  const snapshots: ResolvedWeights['snapshots'] = [];
  // A root option as a local path: folders and (for sd) files as given; repo ids through the cache.
  const local = (option: string, value: string | undefined, parts: string[], fileOk: boolean): string | undefined => {
    if (value === undefined) return undefined;
    if (isDir(value) || (fileOk && isFile(value))) return value;
    if (isFile(value)) throw new XpsrError('ERR_INVALID_OPTION', `'${option}' must be a folder (${parts.join('/, ')}/), got the file ${value}`);
    if (isRepoId(value)) {
      const s = resolveRepoSnapshot(value, (d) => missingParts(d, parts, o.variant), process.env, `for ${option}`);
      snapshots.push({ option, repoId: value, dir: s.dir, revision: s.revision });
      return s.dir;
    }
    throw new XpsrError('ERR_WEIGHTS_MISSING', `'${option}' folder not found: ${value}`);
  };
  const sdOption = o.sd !== undefined ? 'sd' : 'model';
  const sd = need.sd ? local(sdOption, o.sd ?? o.model, o.sd !== undefined ? SD_PARTS : [...SD_PARTS, ...XPSR_PARTS], o.sd !== undefined) : undefined;
  const xp = need.xpsr
    ? local(o.xpsr !== undefined ? 'xpsr' : 'model', o.xpsr ?? o.model, o.xpsr !== undefined ? XPSR_PARTS : [...SD_PARTS, ...XPSR_PARTS], false)
    : undefined;
  const sdConfig = o.sdConfig === undefined ? undefined : local('sdConfig', o.sdConfig, [], false);
  const singleFile = sd !== undefined && isFile(sd);

  const missing: string[] = [];
  const find = (sub: string, roots: (string | undefined)[]): string | undefined => {
    const rs = [...new Set(roots.filter((r): r is string => r !== undefined && isDir(r)))];
    const hit = rs.find((r) => provides(r, sub));
    if (!hit) missing.push(`${sub}/ (looked in ${rs.join(' and ') || 'nothing'})`);
    return hit && path.join(hit, sub);
  };
  const optional = (sub: string, roots: (string | undefined)[]): string | undefined => {
    const r = roots.find((x) => x !== undefined && isDir(x) && isDir(path.join(x, sub)));
    return r && path.join(r, sub);
  };
  const configOf = (sub: string): string | undefined => {
    const f = sdConfig && path.join(sdConfig, sub, 'config.json');
    return f && existsSync(f) ? readFileSync(f, 'utf8') : undefined;
  };

  const out: ResolvedWeights = {
    sdLayout: singleFile ? 'single file' : 'diffusers folder',
    snapshots,
    textEncoder: { path: '' },
    vae: { path: '' },
    unet: { path: '' },
    controlnet: { path: '' },
    variant: o.variant,
  };
  if (need.sd && singleFile) {
    out.textEncoder = { path: sd!, configJson: configOf('text_encoder') };
    out.vae = { path: sd!, configJson: configOf('vae') };
    out.tokenizer = optional('tokenizer', [sdConfig]);
    out.scheduler = optional('scheduler', [sdConfig]);
  } else if (need.sd) {
    out.textEncoder = { path: find('text_encoder', [sd, xp]) ?? '' };
    out.tokenizer = find('tokenizer', [sd, xp]);
    out.vae = { path: find('vae', [sd, xp]) ?? '' };
    out.scheduler = [sd, xp].filter((r): r is string => r !== undefined && isDir(r)).find((r) => provides(r, 'scheduler'));
    if (out.scheduler) out.scheduler = path.join(out.scheduler, 'scheduler');
  }
  if (need.xpsr) {
    out.unet = { path: find('unet', [xp, singleFile ? undefined : sd]) ?? '' };
    out.controlnet = { path: find('controlnet', [xp, singleFile ? undefined : sd]) ?? '' };
  }
  if (missing.length)
    throw new XpsrError(
      'ERR_WEIGHTS_MISSING',
      `XPSR.load: missing component folder${missing.length > 1 ? 's' : ''}:\n  ${missing.join('\n  ')}\n` +
        'Expected Stable Diffusion 1.5 in diffusers layout (text_encoder/, tokenizer/, vae/, scheduler/) or as one ' +
        'single-file checkpoint, and the XPSR checkpoint (unet/, controlnet/).',
    );
  return out;
}
