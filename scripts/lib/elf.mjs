// A small reader of 64-bit little-endian ELF shared objects (Linux x64 / arm64 addons): what a binary needs
// from the system (DT_NEEDED, RUNPATH, the highest GLIBC_/GLIBCXX_ symbol versions), what compiled it
// (.comment) and which CUDA code it carries (the fat binaries in .nv_fatbin). Used by the build-info writer,
// the pack script and the packed-tarball test, so that none of them depends on binutils being installed.
import fs from 'node:fs';

const SHT_DYNAMIC = 6;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
const FATBIN_MAGIC = 0xba55ed50;

function cstr(buf, off) {
  let end = off;
  while (end < buf.length && buf[end] !== 0) end++;
  return buf.toString('latin1', off, end);
}

/** Compares dotted versions numerically ('2.9' < '2.34'). */
export function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

function highest(versions, prefix) {
  const v = versions
    .filter((s) => s.startsWith(prefix))
    .map((s) => s.slice(prefix.length))
    .filter((s) => /^[0-9.]+$/.test(s));
  return v.sort(compareVersions).pop() ?? null;
}

/**
 * CUDA code in the fat binaries of `sec` (the .nv_fatbin section): each fat binary is a 16-byte header
 * (magic 0xBA55ED50, version, header size, payload size) followed by entries whose header holds the kind
 * (1 = PTX, 2 = ELF cubin, i.e. SASS) at offset 0, its own size at 4, the payload size at 8 and the
 * architecture (80 = sm_80 / compute_80) at 28.
 */
function fatbinArchs(sec) {
  const sass = new Set();
  const ptx = new Set();
  let fatbins = 0;
  for (let off = 0; off + 16 <= sec.length; ) {
    if (sec.readUInt32LE(off) !== FATBIN_MAGIC) {
      off += 8;
      continue;
    }
    fatbins++;
    const headerSize = sec.readUInt16LE(off + 6);
    const size = Number(sec.readBigUInt64LE(off + 8));
    const end = Math.min(sec.length, off + headerSize + size);
    for (let e = off + headerSize; e + 32 <= end; ) {
      const kind = sec.readUInt16LE(e);
      const entryHeader = sec.readUInt32LE(e + 4);
      const payload = Number(sec.readBigUInt64LE(e + 8));
      const arch = sec.readUInt32LE(e + 28);
      if (entryHeader < 32 || entryHeader + payload === 0) break;
      if (kind === 2) sass.add(arch);
      else if (kind === 1) ptx.add(arch);
      e += entryHeader + payload;
    }
    off = Math.max(off + 16, end);
    off = (off + 7) & ~7;
  }
  const sorted = (s) => [...s].sort((a, b) => a - b);
  return { fatbins, sass: sorted(sass).map((a) => `sm_${a}`), ptx: sorted(ptx).map((a) => `compute_${a}`) };
}

/**
 * Reads an ELF64 LE file. Returns { needed, runpath, versions (every symbol version it requires, e.g.
 * 'GLIBC_2.34'), glibc, glibcxx, cxxabi (the highest of each, or null), comment (strings of .comment),
 * cpuKernels (['avx2', 'avx512', 'portable'] when the symbol table is kept),
 * cuda ({ sass: ['sm_80', ...], ptx: ['compute_80'], fatbins } or null when it has no .nv_fatbin) }.
 */
export function readElf(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file}: not an ELF file`);
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error(`${file}: only 64-bit little-endian ELF is supported`);
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  const sections = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    sections.push({
      nameOff: buf.readUInt32LE(o),
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 0x18)),
      size: Number(buf.readBigUInt64LE(o + 0x20)),
      link: buf.readUInt32LE(o + 0x28),
      info: buf.readUInt32LE(o + 0x2c),
    });
  }
  const names = sections[shstrndx];
  for (const s of sections) s.name = cstr(buf, names.offset + s.nameOff);
  const data = (s) => buf.subarray(s.offset, s.offset + s.size);

  const needed = [];
  let runpath = null;
  const dyn = sections.find((s) => s.type === SHT_DYNAMIC);
  if (dyn) {
    const str = sections[dyn.link];
    for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.size; o += 16) {
      const tag = Number(buf.readBigInt64LE(o));
      const val = Number(buf.readBigUInt64LE(o + 8));
      if (tag === 0) break;
      if (tag === DT_NEEDED) needed.push(cstr(buf, str.offset + val));
      if (tag === DT_RUNPATH || tag === DT_RPATH) runpath = cstr(buf, str.offset + val);
    }
  }

  // .gnu.version_r: Verneed { vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32 } ->
  // Vernaux { vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32 }.
  const versions = new Set();
  const vr = sections.find((s) => s.type === SHT_GNU_VERNEED);
  if (vr) {
    const str = sections[vr.link];
    let o = vr.offset;
    for (let n = 0; n < vr.info; n++) {
      const cnt = buf.readUInt16LE(o + 2);
      let a = o + buf.readUInt32LE(o + 8);
      for (let k = 0; k < cnt; k++) {
        versions.add(cstr(buf, str.offset + buf.readUInt32LE(a + 8)));
        const next = buf.readUInt32LE(a + 12);
        if (!next) break;
        a += next;
      }
      const next = buf.readUInt32LE(o + 12);
      if (!next) break;
      o += next;
    }
  }
  const all = [...versions].sort();

  // CPU kernel sets linked in (native/cpu/kernels_<isa>.cpp), from the static symbol table when not stripped.
  const symtab = sections.find((s) => s.name === '.strtab');
  const cpuKernels = symtab
    ? [
        ...new Set(
          data(symtab)
            .toString('latin1')
            .match(/kernels_(portable|avx2|avx512)Ev/g) ?? [],
        ),
      ]
        .map((m) => m.slice(8, -2))
        .sort()
    : [];

  const commentSec = sections.find((s) => s.name === '.comment');
  const comment = commentSec ? data(commentSec).toString('latin1').split('\0').filter(Boolean) : [];
  const fat = sections.find((s) => s.name === '.nv_fatbin');

  return {
    needed,
    runpath,
    versions: all,
    glibc: highest(all, 'GLIBC_'),
    glibcxx: highest(all, 'GLIBCXX_'),
    cxxabi: highest(all, 'CXXABI_'),
    comment,
    cpuKernels,
    cuda: fat && fat.size > 0 ? fatbinArchs(data(fat)) : null,
  };
}
