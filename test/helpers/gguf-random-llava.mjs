// Random-weight LLaVA-1.5-style GGUF pairs (llama text model + CLIP/mlp mmproj), generated locally, for
// tests ('tiny', < 1 MB, instant) and benchmarks ('7b': LLaVA-1.5-7B shapes, Q4_0 text ~3.8 GB + F16
// mmproj ~0.6 GB). They load in llama.cpp like real LLaVA-1.5 conversions; their answers are nonsense.
// Test-only: not part of the package (scripts/bench-captioner.mjs uses it from a clone).
import fs from 'node:fs';
import path from 'node:path';

import { constantFill, GgmlType, ggmlTypeName, gguf, GgufValueType, mulberry32, uniformFill, writeGguf } from './gguf-writer.mjs';

// Shapes per size ('tiny' | 'small' | '7b'): text model and vision tower (+ projector) dimensions.
const SHAPES = {
  tiny: {
    text: { nEmbd: 64, nHead: 4, nFf: 128, nLayer: 2, nCtx: 2048, vocab: 0 },
    vision: { nEmbd: 32, nHead: 2, nFf: 48, nLayer: 2, image: 32, patch: 8, projDim: 64 },
  },
  // a few MB; slow enough (~1 ms/token on CPU) for cancellation tests
  small: {
    text: { nEmbd: 256, nHead: 4, nFf: 512, nLayer: 4, nCtx: 4096, vocab: 0 },
    vision: { nEmbd: 64, nHead: 2, nFf: 96, nLayer: 2, image: 64, patch: 8, projDim: 256 },
  },
  // llava-1.5-7b: vicuna-7b text model, CLIP ViT-L/14-336 (23 of 24 blocks kept), 2-layer mlp projector.
  '7b': {
    text: { nEmbd: 4096, nHead: 32, nFf: 11008, nLayer: 32, nCtx: 4096, vocab: 32000 },
    vision: { nEmbd: 1024, nHead: 16, nFf: 4096, nLayer: 23, image: 336, patch: 14, projDim: 768 },
  },
};

// Words of the tiny vocabulary: the prompt's words plus caption-like words, so that random answers read as
// (nonsense) English.
const WORDS = (
  'a an the of and in on with is are this image photo picture shows showing there its it ' +
  'please provide descriptive summary content describe evaluate quality clarity color colour noise lighting ' +
  'sharp blurry blur clear dark bright low high resolution detail details texture edges soft noisy grainy ' +
  'person man woman child dog cat bird tree trees sky cloud water building street car house room table ' +
  'flower flowers grass field mountain road window wall light shadow red green blue white black yellow ' +
  'small large old young standing sitting walking near front background foreground overall good poor fair ' +
  'moderate slightly very quite somewhat visible lacks has have be can USER ASSISTANT'
).split(/\s+/);

function buildVocab(target) {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const readable = tokens.length;
  const seen = new Set(tokens);
  const add = (t) => {
    if (!seen.has(t)) {
      seen.add(t);
      tokens.push(t);
      types.push(1);
    }
  };
  add('\u2581');
  for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?\'"-()') add(c);
  for (const w of WORDS) {
    const full = '\u2581' + w;
    for (let k = 2; k <= full.length; k++) add(full.slice(0, k));
    for (let k = 2; k <= w.length; k++) add(w.slice(0, k));
  }
  for (let i = 0; tokens.length < target; i++) add(`\u2581w${i}`);
  const scores = tokens.map((_, i) => (types[i] === 1 ? -i : 0));
  return { tokens, scores, types, bos: 1, eos: 2, unk: 0, readable };
}

const fileType = (t) => (t === GgmlType.F32 ? 0 : t === GgmlType.F16 ? 1 : t === GgmlType.Q4_0 ? 2 : 7);

function tensor(name, ne, type, fill) {
  return { name, ne, type, fill };
}

/** Uniform weights with std 1/sqrt(fanIn) (scale sqrt(3/fanIn)). */
function linear(seed, fanIn) {
  return uniformFill(seed, Math.sqrt(3 / fanIn));
}

function textModel(shape, vocab, type, seed, tiny) {
  const { nEmbd, nHead, nFf, nLayer, nCtx } = shape;
  const V = vocab.tokens.length;
  const kv = {
    'general.architecture': gguf.str('llama'),
    'general.name': gguf.str('xpsr random llava text'),
    'general.file_type': gguf.u32(fileType(type)),
    'llama.context_length': gguf.u32(nCtx),
    'llama.embedding_length': gguf.u32(nEmbd),
    'llama.block_count': gguf.u32(nLayer),
    'llama.feed_forward_length': gguf.u32(nFf),
    'llama.attention.head_count': gguf.u32(nHead),
    'llama.attention.head_count_kv': gguf.u32(nHead),
    'llama.rope.dimension_count': gguf.u32(nEmbd / nHead),
    'llama.rope.freq_base': gguf.f32(10000),
    'llama.attention.layer_norm_rms_epsilon': gguf.f32(1e-5),
    'llama.vocab_size': gguf.u32(V),
    'tokenizer.ggml.model': gguf.str('llama'),
    'tokenizer.ggml.tokens': gguf.arr(GgufValueType.STRING, vocab.tokens),
    'tokenizer.ggml.scores': gguf.arr(GgufValueType.FLOAT32, vocab.scores),
    'tokenizer.ggml.token_type': gguf.arr(GgufValueType.INT32, vocab.types),
    'tokenizer.ggml.bos_token_id': gguf.u32(vocab.bos),
    'tokenizer.ggml.eos_token_id': gguf.u32(vocab.eos),
    'tokenizer.ggml.unknown_token_id': gguf.u32(vocab.unk),
    'tokenizer.ggml.add_bos_token': gguf.bool(true),
    'tokenizer.ggml.add_eos_token': gguf.bool(false),
  };
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) >>> 0);
  const norm = constantFill(1);
  // Output head: for the tiny model, rows of control and byte tokens are zero, so greedy decoding never
  // stops early and always yields readable word tokens (the logit of a zero row is 0; the largest random
  // word logit is positive).
  const outScale = Math.sqrt(3 / nEmbd) * (tiny ? 4 : 1);
  const rndOut = mulberry32(next());
  const outFill = tiny
    ? (out, start) => {
        for (let i = 0; i < out.length; i++) {
          const row = Math.floor((start + i) / nEmbd);
          const r = (rndOut() * 2 - 1) * outScale;
          out[i] = row < vocab.readable ? 0 : r;
        }
      }
    : uniformFill(next(), outScale);
  const tensors = [
    // token embeddings: F32 for the tiny model; same type as the weights otherwise (like real Q4_0 files)
    tensor('token_embd.weight', [nEmbd, V], tiny ? GgmlType.F32 : type, uniformFill(next(), 1)),
    tensor('output_norm.weight', [nEmbd], GgmlType.F32, norm),
    tensor('output.weight', [nEmbd, V], tiny ? GgmlType.F32 : type, outFill),
  ];
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      tensor(p + 'attn_norm.weight', [nEmbd], GgmlType.F32, norm),
      tensor(p + 'attn_q.weight', [nEmbd, nEmbd], type, linear(next(), nEmbd)),
      tensor(p + 'attn_k.weight', [nEmbd, nEmbd], type, linear(next(), nEmbd)),
      tensor(p + 'attn_v.weight', [nEmbd, nEmbd], type, linear(next(), nEmbd)),
      tensor(p + 'attn_output.weight', [nEmbd, nEmbd], type, linear(next(), nEmbd)),
      tensor(p + 'ffn_norm.weight', [nEmbd], GgmlType.F32, norm),
      tensor(p + 'ffn_gate.weight', [nEmbd, nFf], type, linear(next(), nEmbd)),
      tensor(p + 'ffn_up.weight', [nEmbd, nFf], type, linear(next(), nEmbd)),
      tensor(p + 'ffn_down.weight', [nFf, nEmbd], type, linear(next(), nFf)),
    );
  }
  return { kv, tensors };
}

function mmprojModel(shape, textEmbd, type, seed) {
  const { nEmbd, nHead, nFf, nLayer, image, patch, projDim } = shape;
  const nPos = (image / patch) ** 2 + 1;
  const kv = {
    'general.architecture': gguf.str('clip'),
    'general.name': gguf.str('xpsr random llava mmproj'),
    'general.file_type': gguf.u32(fileType(type)),
    'clip.has_text_encoder': gguf.bool(false),
    'clip.has_vision_encoder': gguf.bool(true),
    'clip.has_llava_projector': gguf.bool(true),
    'clip.projector_type': gguf.str('mlp'),
    'clip.use_gelu': gguf.bool(false),
    'clip.vision.image_size': gguf.u32(image),
    'clip.vision.patch_size': gguf.u32(patch),
    'clip.vision.embedding_length': gguf.u32(nEmbd),
    'clip.vision.feed_forward_length': gguf.u32(nFf),
    'clip.vision.projection_dim': gguf.u32(projDim),
    'clip.vision.block_count': gguf.u32(nLayer),
    'clip.vision.attention.head_count': gguf.u32(nHead),
    'clip.vision.attention.layer_norm_epsilon': gguf.f32(1e-5),
    'clip.vision.image_mean': gguf.arr(GgufValueType.FLOAT32, [0.48145466, 0.4578275, 0.40821073]),
    'clip.vision.image_std': gguf.arr(GgufValueType.FLOAT32, [0.26862954, 0.26130258, 0.27577711]),
  };
  let s = seed ^ 0x5bd1e995;
  const next = () => (s = (s * 1103515245 + 12345) >>> 0);
  const one = constantFill(1);
  const zero = constantFill(0);
  const w2 = (ne, fanIn) => ({ ne, fill: linear(next(), fanIn) });
  const F32 = GgmlType.F32;
  const tensors = [
    tensor('v.class_embd', [nEmbd], F32, uniformFill(next(), 0.1)),
    // conv weight (out, 3, p, p) reversed; F16 at most (row length = patch is not a multiple of 32)
    tensor('v.patch_embd.weight', [patch, patch, 3, nEmbd], type === GgmlType.F32 ? F32 : GgmlType.F16, linear(next(), 3 * patch * patch)),
    tensor('v.position_embd.weight', [nEmbd, nPos], type === GgmlType.F32 ? F32 : GgmlType.F16, uniformFill(next(), 0.1)),
    tensor('v.pre_ln.weight', [nEmbd], F32, one),
    tensor('v.pre_ln.bias', [nEmbd], F32, zero),
  ];
  for (let l = 0; l < nLayer; l++) {
    const p = `v.blk.${l}.`;
    for (const n of ['attn_q', 'attn_k', 'attn_v', 'attn_out']) {
      const w = w2([nEmbd, nEmbd], nEmbd);
      tensors.push(tensor(p + n + '.weight', w.ne, type, w.fill), tensor(p + n + '.bias', [nEmbd], F32, zero));
    }
    const up = w2([nEmbd, nFf], nEmbd);
    const down = w2([nFf, nEmbd], nFf);
    tensors.push(
      tensor(p + 'ln1.weight', [nEmbd], F32, one),
      tensor(p + 'ln1.bias', [nEmbd], F32, zero),
      tensor(p + 'ln2.weight', [nEmbd], F32, one),
      tensor(p + 'ln2.bias', [nEmbd], F32, zero),
      tensor(p + 'ffn_up.weight', up.ne, type, up.fill),
      tensor(p + 'ffn_up.bias', [nFf], F32, zero),
      tensor(p + 'ffn_down.weight', down.ne, type, down.fill),
      tensor(p + 'ffn_down.bias', [nEmbd], F32, zero),
    );
  }
  // projector: mm.0 (nEmbd -> textEmbd), GELU, mm.2 (textEmbd -> textEmbd)
  const m0 = w2([nEmbd, textEmbd], nEmbd);
  const m2 = w2([textEmbd, textEmbd], textEmbd);
  tensors.push(
    tensor('mm.0.weight', m0.ne, type, m0.fill),
    tensor('mm.0.bias', [textEmbd], F32, zero),
    tensor('mm.2.weight', m2.ne, type, m2.fill),
    tensor('mm.2.bias', [textEmbd], F32, zero),
  );
  return { kv, tensors, imageTokens: nPos - 1 };
}

/**
 * Writes a random LLaVA pair into `dir` (created if needed) and returns
 * `{ model, mmproj, imageTokens (per image), vocabSize }`.
 * @param {object} options
 * @param {string} options.dir
 * @param {'tiny' | 'small' | '7b'} [options.size] default 'tiny'
 * @param {number} [options.textType] GgmlType of the text model's 2-D weights (tiny default F32, 7b default Q4_0)
 * @param {number} [options.mmprojType] GgmlType of the mmproj's 2-D weights (tiny default F32, 7b default F16)
 * @param {number} [options.seed] default 1234
 * @param {string} [options.name] file stem; files are `<stem>-model.gguf` and `<stem>-mmproj.gguf`
 * @param {boolean} [options.reuse] keep existing files of the same name instead of writing them again
 * @param {(file: string, bytesWritten: number, totalBytes: number) => void} [options.onProgress]
 */
export function createRandomLlava(options) {
  const size = options.size ?? 'tiny';
  const tiny = size !== '7b';
  const shape = SHAPES[size];
  const textType = options.textType ?? (tiny ? GgmlType.F32 : GgmlType.Q4_0);
  const mmType = options.mmprojType ?? (tiny ? GgmlType.F32 : GgmlType.F16);
  const seed = options.seed ?? 1234;
  const stem = options.name ?? `random-llava-${size}-${ggmlTypeName(textType).toLowerCase()}-s${seed}`;
  fs.mkdirSync(options.dir, { recursive: true });
  const model = path.join(options.dir, `${stem}-model.gguf`);
  const mmproj = path.join(options.dir, `${stem}-mmproj.gguf`);
  const vocab = buildVocab(shape.text.vocab);
  const text = textModel(shape.text, vocab, textType, seed, tiny);
  const vis = mmprojModel(shape.vision, shape.text.nEmbd, mmType, seed);
  const result = { model, mmproj, imageTokens: vis.imageTokens, vocabSize: vocab.tokens.length };
  if (options.reuse && fs.existsSync(model) && fs.existsSync(mmproj)) return result;
  for (const [file, m] of [
    [model, text],
    [mmproj, vis],
  ]) {
    const tmp = `${file}.${process.pid}.tmp`;
    writeGguf(tmp, m.kv, m.tensors, {
      onProgress: options.onProgress ? (w, t) => options.onProgress(file, w, t) : undefined,
    });
    fs.renameSync(tmp, file);
  }
  return result;
}
