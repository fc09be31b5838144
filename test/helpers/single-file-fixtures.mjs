// The single-file SD checkpoints of test/fixtures/single_file/ (see its README): every tensor in them is
// byte for byte a tensor of the fixture model already in test/fixtures/model/ (float32, or rounded to
// float16), so the repository keeps only each file's "skeleton" (its bytes minus those tensor ranges,
// gzipped: headers, the torch pickle, zip records) and a recipe saying which fixture tensor fills each
// range. Assembling gives the original files exactly (checked by SHA-256).
//
//   node test/helpers/single-file-fixtures.mjs            assemble the files (if missing or different)
//   node test/helpers/single-file-fixtures.mjs --make DIR rewrite the recipes from original files in DIR
//                                                        (the shared fixtures' single_file/ folder)
// Tests call ensureSingleFileFixtures().
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.join(root, 'test', 'fixtures');
export const singleFileDir = path.join(fixtures, 'single_file');
const recipeDir = path.join(singleFileDir, 'recipes');
export const SINGLE_FILES = ['sd15-single.safetensors', 'sd15-single-fp16.safetensors', 'sd15-single.ckpt'];

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/** Tensors of a safetensors file: name -> { dtype, shape, begin, end } (absolute byte offsets). */
function safetensorsIndex(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, begin: 8 + n + t.data_offsets[0], end: 8 + n + t.data_offsets[1] });
  }
  return out;
}

/** Stored entries of a (non-zip64) zip archive: name -> { begin, end } of their data. */
function zipIndex(buf) {
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error('not a zip archive');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out = new Map();
  for (let i = 0; i < count; i++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error('bad zip central directory');
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28),
      extraLen = buf.readUInt16LE(p + 30),
      commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    const begin = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    out.set(name, { begin, end: begin + size });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** float32 bits -> float16 bits, round to nearest even (as torch's .half()). */
export function f32ToF16(x) {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1),
      half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

function toF16(bytes) {
  const out = Buffer.alloc(bytes.length / 2);
  for (let i = 0; i < bytes.length / 4; i++) out.writeUInt16LE(f32ToF16(bytes.readUInt32LE(4 * i)), 2 * i);
  return out;
}

/** Bytes of one fixture tensor, as stored ('f32') or rounded to float16 ('f16'). */
function tensorBytes(cache, source, key, as) {
  if (!cache.has(source)) {
    const buf = readFileSync(path.join(fixtures, source));
    cache.set(source, { buf, index: safetensorsIndex(buf) });
  }
  const { buf, index } = cache.get(source);
  const t = index.get(key);
  if (!t) throw new Error(`${source}: no tensor '${key}' (the fixture model changed?)`);
  const bytes = buf.subarray(t.begin, t.end);
  return as === 'f16' ? toF16(bytes) : bytes;
}

/** Writes test/fixtures/single_file/recipes/* from the original files in `dir`. */
export function makeRecipes(dir) {
  const sources = readdirSync(path.join(fixtures, 'model'), { recursive: true })
    .filter((f) => f.endsWith('.safetensors'))
    .map((f) => path.join('model', f))
    .sort();
  const byHash = new Map();
  for (const source of sources) {
    const buf = readFileSync(path.join(fixtures, source));
    for (const [key, t] of safetensorsIndex(buf)) {
      const bytes = buf.subarray(t.begin, t.end);
      for (const [as, b] of [
        ['f32', bytes],
        ['f16', t.dtype === 'F32' ? toF16(bytes) : null],
      ])
        if (b && b.length && !byHash.has(sha256(b))) byHash.set(sha256(b), [source, key, as]);
    }
  }
  mkdirSync(recipeDir, { recursive: true });
  for (const file of SINGLE_FILES) {
    const buf = readFileSync(path.join(dir, file));
    const ranges = file.endsWith('.ckpt')
      ? [...zipIndex(buf)].filter(([name]) => name.includes('/data/')).map(([, r]) => r)
      : [...safetensorsIndex(buf).values()];
    ranges.sort((a, b) => a.begin - b.begin);
    const pieces = [];
    const skeleton = [];
    let at = 0;
    for (const r of ranges) {
      const hit = r.end > r.begin && byHash.get(sha256(buf.subarray(r.begin, r.end)));
      if (!hit) continue; // stays in the skeleton
      skeleton.push(buf.subarray(at, r.begin));
      pieces.push([r.begin, r.end - r.begin, ...hit]);
      at = r.end;
    }
    skeleton.push(buf.subarray(at));
    writeFileSync(path.join(recipeDir, `${file}.skeleton.gz`), gzipSync(Buffer.concat(skeleton), { level: 9 }));
    const recipe = { file, size: buf.length, sha256: sha256(buf), skeleton: `${file}.skeleton.gz`, pieces };
    writeFileSync(path.join(recipeDir, `${file}.json`), JSON.stringify(recipe, null, 0).replace(/\],\[/g, '],\n[') + '\n');
    process.stderr.write(`${file}: ${pieces.length} tensors from the fixture model, skeleton ${Buffer.concat(skeleton).length} bytes\n`);
  }
}

function assemble(file) {
  const recipe = JSON.parse(readFileSync(path.join(recipeDir, `${file}.json`), 'utf8'));
  const skeleton = gunzipSync(readFileSync(path.join(recipeDir, recipe.skeleton)));
  const cache = new Map();
  const parts = [];
  let at = 0,
    from = 0;
  for (const [offset, length, source, key, as] of recipe.pieces) {
    parts.push(skeleton.subarray(from, from + (offset - at)));
    from += offset - at;
    const b = tensorBytes(cache, source, key, as);
    if (b.length !== length) throw new Error(`${file}: ${source} '${key}' has ${b.length} bytes, the recipe ${length}`);
    parts.push(b);
    at = offset + length;
  }
  parts.push(skeleton.subarray(from));
  const out = Buffer.concat(parts);
  if (out.length !== recipe.size || sha256(out) !== recipe.sha256)
    throw new Error(`${file}: assembled bytes differ from the original (sha256 ${sha256(out)}, expected ${recipe.sha256})`);
  const tmp = path.join(singleFileDir, `.${file}.${process.pid}.tmp`);
  writeFileSync(tmp, out);
  renameSync(tmp, path.join(singleFileDir, file));
}

/** Assembles the single-file fixtures that are missing or differ; returns their paths by name. */
export function ensureSingleFileFixtures() {
  const out = {};
  for (const file of SINGLE_FILES) {
    const p = path.join(singleFileDir, file);
    const recipe = JSON.parse(readFileSync(path.join(recipeDir, `${file}.json`), 'utf8'));
    if (!existsSync(p) || sha256(readFileSync(p)) !== recipe.sha256) assemble(file);
    out[file] = p;
  }
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--make');
  if (i > 0) makeRecipes(process.argv[i + 1] ?? path.join(root, '..', 'shared', 'fixtures', 'single_file'));
  for (const [name, p] of Object.entries(ensureSingleFileFixtures())) process.stdout.write(`${name}: ${path.relative(root, p)}\n`);
}
