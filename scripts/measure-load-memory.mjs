#!/usr/bin/env node
// Host memory while loading an original-layout SD-1.5 single file, float32 vs float16 (issue 14, item 4).
// Writes synthetic full-size files (SD-1.5's text encoder and VAE shapes, original names, plus 512 MB of
// garbage under model.diffusion_model.* that must never be read) and loads them in fresh processes:
//   check : every tensor read, converted and checked, nothing kept (what a device load costs the host:
//           on CUDA the weights live on the GPU, so the host only reads)
//   cpu   : the CPU backend's load (its f32 weights stay in host memory, expanded from the file)
// and reports peak RSS above the process baseline (getrusage maxrss) next to the file sizes, as JSON.
//   node scripts/measure-load-memory.mjs [--keep] [--out FILE]
// Not a timed test: numbers depend on the machine; compare the rows of one run.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);

// ---- the child: one load, then its peak RSS ---------------------------------------------------------------
if (args[0] === '--child') {
  const [, mode, file] = args;
  const { Engine } = await import(path.join(root, 'dist', 'lib', 'engine', 'engine.js'));
  const engine = await Engine.create({ device: 'cpu', threads: 1 });
  const baseline = process.resourceUsage().maxRSS * 1024;
  const t0 = performance.now();
  const te = mode === 'check' ? await engine.checkWeights('text_encoder', file) : await engine.loadTextEncoder(file);
  const vae = mode === 'check' ? await engine.checkWeights('vae', file) : await engine.loadVae(file);
  const ms = performance.now() - t0;
  const peak = process.resourceUsage().maxRSS * 1024;
  const tensors = mode === 'check' ? te.tensors + vae.tensors : te.info.tensors + vae.info.tensors;
  process.stdout.write(JSON.stringify({ baseline, peak, loadMs: ms, tensors }) + '\n');
  engine.dispose();
  process.exit(0);
}

// ---- SD-1.5 shapes under original names ----------------------------------------------------------------
function sd15Tensors() {
  const t = [];
  const T = 'cond_stage_model.transformer.text_model.';
  t.push([`${T}embeddings.token_embedding.weight`, [49408, 768]], [`${T}embeddings.position_embedding.weight`, [77, 768]]);
  for (let l = 0; l < 12; l++) {
    const p = `${T}encoder.layers.${l}.`;
    for (const n of ['layer_norm1', 'layer_norm2']) t.push([`${p}${n}.weight`, [768]], [`${p}${n}.bias`, [768]]);
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) t.push([`${p}self_attn.${n}.weight`, [768, 768]], [`${p}self_attn.${n}.bias`, [768]]);
    t.push([`${p}mlp.fc1.weight`, [3072, 768]], [`${p}mlp.fc1.bias`, [3072]], [`${p}mlp.fc2.weight`, [768, 3072]], [`${p}mlp.fc2.bias`, [768]]);
  }
  t.push([`${T}final_layer_norm.weight`, [768]], [`${T}final_layer_norm.bias`, [768]]);
  const V = 'first_stage_model.';
  const conv = (n, o, i, k) => t.push([`${V}${n}.weight`, [o, i, k, k]], [`${V}${n}.bias`, [o]]);
  const norm = (n, c) => t.push([`${V}${n}.weight`, [c]], [`${V}${n}.bias`, [c]]);
  const resnet = (p, cin, cout) => {
    norm(`${p}.norm1`, cin), conv(`${p}.conv1`, cout, cin, 3), norm(`${p}.norm2`, cout), conv(`${p}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${p}.nin_shortcut`, cout, cin, 1);
  };
  const mid = (p) => {
    resnet(`${p}.mid.block_1`, 512, 512), norm(`${p}.mid.attn_1.norm`, 512);
    for (const n of ['q', 'k', 'v', 'proj_out']) conv(`${p}.mid.attn_1.${n}`, 512, 512, 1);
    resnet(`${p}.mid.block_2`, 512, 512);
  };
  const ch = [128, 256, 512, 512];
  conv('encoder.conv_in', 128, 3, 3);
  ch.forEach((c, i) => {
    for (let j = 0; j < 2; j++) resnet(`encoder.down.${i}.block.${j}`, j === 0 ? ch[Math.max(0, i - 1)] : c, c);
    if (i < 3) conv(`encoder.down.${i}.downsample.conv`, c, c, 3);
  });
  mid('encoder'), norm('encoder.norm_out', 512), conv('encoder.conv_out', 8, 512, 3), conv('quant_conv', 8, 8, 1);
  conv('post_quant_conv', 4, 4, 1), conv('decoder.conv_in', 512, 4, 3), mid('decoder');
  const rch = [...ch].reverse();
  rch.forEach((c, k) => {
    for (let j = 0; j < 3; j++) resnet(`decoder.up.${3 - k}.block.${j}`, j === 0 ? rch[Math.max(0, k - 1)] : c, c);
    if (k < 3) conv(`decoder.up.${3 - k}.upsample.conv`, c, c, 3);
  });
  norm('decoder.norm_out', 128), conv('decoder.conv_out', 3, 128, 3);
  // Stand-in for the UNet (not used by XPSR): 8 x 16 M elements of NaN.
  for (let i = 0; i < 8; i++) t.push([`model.diffusion_model.input_blocks.${i}.0.weight`, [16 * 1024 * 1024]]);
  return t;
}

// Streams a safetensors file: small deterministic finite values (F32 or F16 bits), garbage for the UNet part.
function writeSingleFile(file, dtype) {
  const esize = dtype === 'F16' ? 2 : 4;
  const tensors = sd15Tensors();
  const header = {};
  let off = 0;
  for (const [name, shape] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1) * esize;
    header[name] = { dtype, shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = openSync(file, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len), writeSync(fd, json);
  const chunk = Buffer.alloc(1 << 22);
  const pattern = (garbage) => {
    for (let i = 0; i < chunk.length; i += esize) {
      const v = ((i * 2654435761) >>> 0) / 2 ** 32 - 0.5; // in [-0.5, 0.5)
      if (garbage)
        esize === 4 ? chunk.writeUInt32LE(0x7fc00000, i) : chunk.writeUInt16LE(0x7e00, i); // NaN
      else if (esize === 4) chunk.writeFloatLE(v * 0.04, i);
      else chunk.writeUInt16LE(v < 0 ? 0xa51f : 0x251f, i); // about ±0.02 in f16
    }
    return Buffer.from(chunk);
  };
  const good = pattern(false),
    bad = pattern(true);
  for (const [name, shape] of tensors) {
    let n = shape.reduce((a, b) => a * b, 1) * esize;
    const src = name.startsWith('model.diffusion_model.') ? bad : good;
    while (n > 0) n -= writeSync(fd, src, 0, Math.min(n, src.length));
  }
  closeSync(fd);
  const used = tensors.filter(([n]) => !n.startsWith('model.diffusion_model.')).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1) * esize, 0);
  return { file, bytes: statSync(file).size, usedBytes: used };
}

const dir = path.join(tmpdir(), `xpsr-load-memory-${process.pid}`);
mkdirSync(dir, { recursive: true });
const mib = (b) => Math.round((b / 2 ** 20) * 10) / 10;
const rows = [];
try {
  const files = {
    F32: writeSingleFile(path.join(dir, 'sd15-synthetic.safetensors'), 'F32'),
    F16: writeSingleFile(path.join(dir, 'sd15-synthetic-fp16.safetensors'), 'F16'),
  };
  for (const mode of ['check', 'cpu'])
    for (const [dtype, f] of Object.entries(files)) {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', mode, f.file], { encoding: 'utf8', timeout: 600_000 });
      if (r.status !== 0) throw new Error(`${mode} ${dtype}: ${r.stderr}`);
      const m = JSON.parse(r.stdout.trim().split('\n').pop());
      const extra = m.peak - m.baseline;
      rows.push({
        mode,
        dtype,
        fileMiB: mib(f.bytes),
        usedMiB: mib(f.usedBytes),
        f32WeightsMiB: mib((f.usedBytes * 4) / (dtype === 'F16' ? 2 : 4)),
        tensors: m.tensors,
        loadMs: Math.round(m.loadMs),
        baselineMiB: mib(m.baseline),
        peakMiB: mib(m.peak),
        peakAboveBaselineMiB: mib(extra),
        peakOverUsedBytes: Math.round((extra / f.usedBytes) * 100) / 100,
      });
    }
  const out = { what: 'host peak RSS while loading the SD-1.5 text encoder + VAE from one synthetic single file', rows };
  const i = args.indexOf('--out');
  if (i >= 0) writeFileSync(args[i + 1], JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
} finally {
  if (!args.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  else process.stderr.write(`files kept in ${dir}\n`);
}
