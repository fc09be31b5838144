// Hostile weights, configs and tokenizer files: each case breaks one file of a temporary copy of the tiny
// test model (test/fixtures/model). `pendingEngine` marks the config range checks the engine makes
// (issue 8, native half): until they are merged these cases may still crash the process that loads them,
// which is why the corpus loads every case in a child process.
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { model, writeTorchZip, PICKLE_LIST, PICKLE_OS_SYSTEM } from '../helpers/fixtures.mjs';

const weightsFile = (dir, c) => path.join(dir, c, c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors');

/** A copy of the tiny model in a temp folder, with `mutate(dir)` applied. */
export function brokenModel(label, mutate) {
  const dir = mkdtempSync(path.join(tmpdir(), `xpsr-corpus-${label}-`));
  cpSync(model, dir, { recursive: true });
  mutate(dir);
  return dir;
}

function editJson(file, edit) {
  const c = JSON.parse(readFileSync(file, 'utf8'));
  edit(c);
  writeFileSync(file, JSON.stringify(c, null, 2));
}

const config = (component, edit) => (dir) =>
  editJson(path.join(dir, component, component === 'scheduler' ? 'scheduler_config.json' : 'config.json'), edit);

/** Rewrites the JSON header of a safetensors file (the data behind it is kept). */
function editHeader(component, edit) {
  return (dir) => {
    const f = weightsFile(dir, component);
    const b = readFileSync(f);
    const n = Number(b.readBigUInt64LE(0));
    const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
    const text = Buffer.from(JSON.stringify(edit(header) ?? header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    writeFileSync(f, Buffer.concat([len, text, b.subarray(8 + n)]));
  };
}

/** Overwrites `count` float32 values of the first tensor of a component's weights with `value`. */
function poison(component, value, count = 1) {
  return (dir) => {
    const f = weightsFile(dir, component);
    const b = readFileSync(f);
    const n = Number(b.readBigUInt64LE(0));
    for (let i = 0; i < count; i++) b.writeFloatLE(value, 8 + n + 4 * i);
    writeFileSync(f, b);
  };
}

/** The UNet weights as a PyTorch .bin holding `pickle` (the safetensors file removed). */
function torchBin(pickle) {
  return (dir) => {
    rmSync(weightsFile(dir, 'unet'));
    writeTorchZip(path.join(dir, 'unet', 'diffusion_pytorch_model.bin'), pickle);
  };
}

const mapArray = (key, f) => (c) => {
  c[key] = c[key].map(f);
};

/** label, mutate(dir), code expected from XPSR.load / `xpsr upscale` (exit 1), why. */
export const weightCases = [
  {
    label: 'truncated-safetensors',
    mutate: (d) => truncateSync(weightsFile(d, 'unet'), Math.floor(statSync(weightsFile(d, 'unet')).size / 2)),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'half a file',
  },
  { label: 'empty-safetensors', mutate: (d) => truncateSync(weightsFile(d, 'controlnet'), 0), code: 'ERR_WEIGHTS_INVALID', why: 'zero bytes' },
  { label: 'missing-weights', mutate: (d) => rmSync(weightsFile(d, 'vae')), code: 'ERR_WEIGHTS_MISSING', why: 'config.json without weights' },
  {
    label: 'header-length-2^62',
    mutate: (d) => {
      const f = weightsFile(d, 'unet');
      const b = readFileSync(f);
      b.writeBigUInt64LE(1n << 62n, 0);
      writeFileSync(f, b);
    },
    code: 'ERR_WEIGHTS_INVALID',
    why: 'a header length of 2^62 bytes',
  },
  {
    label: 'header-not-json',
    mutate: (d) => {
      const f = weightsFile(d, 'unet');
      const b = readFileSync(f);
      b.write('{"a":', 8);
      b.fill(0x7b, 13, 40);
      writeFileSync(f, b);
    },
    code: 'ERR_WEIGHTS_INVALID',
    why: 'a header that is not JSON',
  },
  {
    label: 'offsets-outside-file',
    mutate: editHeader('unet', (h) => {
      const k = Object.keys(h).find((x) => x !== '__metadata__');
      h[k].data_offsets = [0, 2 ** 40];
    }),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'a tensor reaching past the end of the file',
  },
  {
    label: 'shape-overflow',
    mutate: editHeader('unet', (h) => {
      const k = Object.keys(h).find((x) => x !== '__metadata__');
      h[k].shape = [2 ** 31, 2 ** 31, 2 ** 31];
    }),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'a shape whose size overflows 64 bits',
  },
  {
    label: 'unknown-dtype',
    mutate: editHeader('vae', (h) => {
      const k = Object.keys(h).find((x) => x !== '__metadata__');
      h[k].dtype = 'Q7';
    }),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'a dtype no reader knows',
  },
  { label: 'nan-weight', mutate: poison('unet', NaN), code: 'ERR_WEIGHTS_INVALID', why: 'one NaN weight' },
  { label: 'inf-weights', mutate: poison('vae', Infinity, 64), code: 'ERR_WEIGHTS_INVALID', why: 'infinite weights' },
  {
    label: 'malicious-pickle',
    mutate: torchBin(PICKLE_OS_SYSTEM),
    code: 'ERR_WEIGHTS_INVALID',
    why: "a .bin whose pickle calls os.system('echo pwned')",
  },
  { label: 'pickle-not-a-state-dict', mutate: torchBin(PICKLE_LIST), code: 'ERR_WEIGHTS_INVALID', why: 'a .bin holding a list' },
  {
    label: 'tokenizer-vocab',
    mutate: (d) => writeFileSync(path.join(d, 'tokenizer', 'vocab.json'), '[1, 2, 3]'),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'vocab.json not an object',
  },
  {
    label: 'tokenizer-merges',
    mutate: (d) => writeFileSync(path.join(d, 'tokenizer', 'merges.txt'), ''),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'empty merges.txt',
  },
  {
    label: 'scheduler-nan',
    mutate: (d) => writeFileSync(path.join(d, 'scheduler', 'scheduler_config.json'), '{"beta_start": NaN, "beta_end": 0.012}'),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'NaN in the scheduler config',
  },
  {
    label: 'scheduler-beta-2',
    mutate: config('scheduler', (c) => {
      c.beta_start = 2;
      c.beta_end = 3;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'betas above 1',
  },
  {
    label: 'scheduler-10^12-steps',
    mutate: config('scheduler', (c) => {
      c.num_train_timesteps = 1e12;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    why: '10^12 train timesteps (a 4 TB table)',
  },
  {
    label: 'scheduler-not-json',
    mutate: (d) => writeFileSync(path.join(d, 'scheduler', 'scheduler_config.json'), '{"beta_start": 0.1,'),
    code: 'ERR_WEIGHTS_INVALID',
    why: 'truncated JSON',
  },
  // Config values the engine range-checks (pending the engine branch: may crash with SIGFPE before it).
  {
    label: 'unet-norm-groups-0',
    mutate: config('unet', (c) => {
      c.norm_num_groups = 0;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'GroupNorm with 0 groups (a division by zero)',
  },
  {
    label: 'vae-norm-groups-0',
    mutate: config('vae', (c) => {
      c.norm_num_groups = 0;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'GroupNorm with 0 groups',
  },
  {
    label: 'controlnet-norm-groups-0',
    mutate: config('controlnet', (c) => {
      c.norm_num_groups = 0;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'GroupNorm with 0 groups',
  },
  {
    label: 'text-heads-0',
    mutate: config('text_encoder', (c) => {
      c.num_attention_heads = 0;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: '0 attention heads',
  },
  {
    label: 'unet-negative-channels',
    mutate: config(
      'unet',
      mapArray('block_out_channels', (v) => -v),
    ),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'negative channel counts',
  },
  {
    label: 'unet-10^9-channels',
    mutate: config(
      'unet',
      mapArray('block_out_channels', () => 1e9),
    ),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'a billion channels',
  },
  {
    label: 'unet-10^5-layers',
    mutate: config('unet', (c) => {
      c.layers_per_block = 100000;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: '100000 layers per block',
  },
  {
    label: 'text-2^40-positions',
    mutate: config('text_encoder', (c) => {
      c.max_position_embeddings = 2 ** 40;
    }),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: '2^40 positions',
  },
  {
    label: 'config-not-json',
    mutate: (d) => writeFileSync(path.join(d, 'unet', 'config.json'), '{"block_out_channels": [16,'),
    code: 'ERR_WEIGHTS_INVALID',
    pendingEngine: true,
    why: 'config.json cut short',
  },
];
