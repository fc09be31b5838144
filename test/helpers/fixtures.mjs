// Paths of the repo's test fixtures and small helpers to build broken weight folders for error tests.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixtures = path.join(root, 'test', 'fixtures');
export const model = path.join(fixtures, 'model');

/** A temp copy of one component folder (config.json + weights) that a test may break. */
export function copyComponent(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `xpsr-${name}-`));
  cpSync(path.join(model, name), dir, { recursive: true });
  return dir;
}

/** A PyTorch-style zip (stored entries) holding `archive/data.pkl` = `pickle` bytes (+ optional storages). */
export function writeTorchZip(file, pickle, storages = {}) {
  const entries = [
    ['archive/data.pkl', pickle],
    ['archive/version', Buffer.from('3\n')],
    ...Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v]),
  ];
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0, 6);
    lh.writeUInt16LE(0, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    lh.writeUInt16LE(0, 28);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, n, data);
    centrals.push(ch, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(file, Buffer.concat([...locals, cd, end]));
}

/** Pickle (protocol 2) of the list [1, 2]: not a state dict. */
export const PICKLE_LIST = Buffer.from([0x80, 0x02, 0x5d, 0x71, 0x00, 0x28, 0x4b, 0x01, 0x4b, 0x02, 0x65, 0x2e]);
/** Pickle that calls os.system('echo pwned'): must be refused, never executed. */
export const PICKLE_OS_SYSTEM = Buffer.concat([
  Buffer.from([0x80, 0x02]),
  Buffer.from('cos\nsystem\n'),
  Buffer.from([0x58]),
  (() => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(10);
    return b;
  })(),
  Buffer.from('echo pwned'),
  Buffer.from([0x85, 0x52, 0x2e]),
]);

export function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}
