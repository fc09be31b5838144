/**
 * Parity of the original-layout single-file checkpoints (DIR/single_file/, see its README): the text
 * encoder and the VAE read out of the float32 .safetensors and the .ckpt reproduce the main goldens
 * (text_encoder / vae_encoder / vae_decoder.safetensors); those of the float16 file reproduce
 * single_file/fp16/*. The fixture model's sizes are not SD-1.5's, so its configs come from DIR/model/.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { SafetensorsFile } from '../io/safetensors.js';
import { compareFloat, type ParityLine } from './compare.js';
import { asTensor, type ParityCheck, type ParityContext } from './index.js';
import { toFloat32 } from '../io/safetensors.js';

const FILES: [component: string, file: string, goldens: string][] = [
  ['single_file_fp32', 'single_file/sd15-single.safetensors', ''],
  ['single_file_ckpt', 'single_file/sd15-single.ckpt', ''],
  ['single_file_fp16', 'single_file/sd15-single-fp16.safetensors', 'single_file/fp16/'],
];

function compare(component: string, outputs: Record<string, { data: Float32Array }>, ref: SafetensorsFile, tol: number): ParityLine[] {
  return Object.keys(outputs)
    .sort()
    .filter((name) => ref.tensors.has(name))
    .map((name) => compareFloat(component, name, outputs[name].data, toFloat32(ref.tensors.get(name)!), tol));
}

async function run(ctx: ParityContext, component: string, file: string, goldens: string): Promise<ParityLine[]> {
  const engine = await ctx.engine();
  const weights = path.join(ctx.dir, file);
  const config = (sub: string) => readFileSync(path.join(ctx.dir, 'model', sub, 'config.json'), 'utf8');
  const lines: ParityLine[] = [];
  const te = await engine.loadTextEncoder(weights, { config: config('text_encoder') });
  try {
    const f = ctx.read(`${goldens}text_encoder.safetensors`);
    const ids = f.tensors.get('input_ids');
    if (!ids) throw new Error(`${goldens}text_encoder.safetensors has no input_ids`);
    const r = await te.encode(ids.data as BigInt64Array, [ids.shape[0], ids.shape[1]], { intermediates: true });
    lines.push(...compare(`${component}/text_encoder`, { ...r.intermediates, last_hidden_state: r.lastHiddenState }, f, ctx.tol));
  } finally {
    te.unload();
  }
  const vae = await engine.loadVae(weights, { config: config('vae') });
  try {
    const enc = ctx.read(`${goldens}vae_encoder.safetensors`);
    const e = await vae.encode(asTensor(enc.tensors.get('x'), 'x'), { intermediates: true });
    lines.push(...compare(`${component}/vae_encoder`, { ...e.intermediates, moments: e.moments }, enc, ctx.tol));
    const dec = ctx.read(`${goldens}vae_decoder.safetensors`);
    const d = await vae.decode(asTensor(dec.tensors.get('z'), 'z'), { intermediates: true });
    lines.push(...compare(`${component}/vae_decoder`, { ...d.intermediates, image: d.image }, dec, ctx.tol));
  } finally {
    vae.unload();
  }
  return lines;
}

export const singleFileChecks: ParityCheck[] = FILES.map(([component, file, goldens]) => ({
  component,
  files: [
    file,
    'model/text_encoder/config.json',
    'model/vae/config.json',
    ...['text_encoder', 'vae_encoder', 'vae_decoder'].map((n) => `${goldens}${n}.safetensors`),
  ],
  run: (ctx) => run(ctx, component, file, goldens),
}));
