// See zip.h. Layout reference: PKWARE APPNOTE.TXT (sections 4.3.7 local header, 4.3.12 central
// directory header, 4.3.14-4.3.16 zip64 / end of central directory records, 4.5.3 zip64 extra field).
#include "zip.h"

#include <cstring>

#include "../../common/error.h"

namespace xpsr {

namespace {
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kMaxEntries = 1u << 20;

uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t rd32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t rd64(const uint8_t* p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

const char* method_name(uint16_t m) {
  switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return "compression method";
  }
}
}  // namespace

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  static const struct Table {
    uint32_t t[256];
    Table() {
      for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
      }
    }
  } table;
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

ZipArchive::ZipArchive(const MappedFile& file) : file_(file) {
  const std::string& path = file.path();
  const uint8_t* d = file.data();
  const uint64_t size = file.size();
  auto bad = [&](const auto&... parts) { fail(ErrorCode::WeightsInvalid, path, ": ", parts...); };
  if (size < 22) bad("zip archive is truncated (", size, " bytes, no end-of-central-directory record)");

  // End of central directory: 22 bytes + comment (<= 65535), searched backwards.
  uint64_t eocd = UINT64_MAX;
  uint64_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
  for (uint64_t pos = size - 22 + 1; pos-- > lowest;) {
    if (rd32(d + pos) == kEocdSig && pos + 22 + rd16(d + pos + 20) <= size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) bad("zip archive has no end-of-central-directory record (truncated or not a zip file)");
  const uint8_t* e = d + eocd;
  if (rd16(e + 4) != 0 || rd16(e + 6) != 0) bad("multi-disk zip archives are not supported");
  uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_offset = rd32(e + 16);
  uint64_t cd_limit = eocd;  // the central directory ends before the EOCD (or the zip64 records)

  if (eocd >= 20 && rd32(d + eocd - 20) == kZip64LocatorSig) {
    uint64_t z = rd64(d + eocd - 20 + 8);
    if (z > eocd - 20 || eocd - 20 - z < 56) bad("zip64 end-of-central-directory locator points outside the archive");
    const uint8_t* z64 = d + z;
    if (rd32(z64) != kZip64EocdSig) bad("zip64 end-of-central-directory record not found where the locator points");
    if (rd32(z64 + 16) != 0 || rd32(z64 + 20) != 0) bad("multi-disk zip archives are not supported");
    count = rd64(z64 + 32);
    cd_size = rd64(z64 + 40);
    cd_offset = rd64(z64 + 48);
    cd_limit = z;
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    bad("zip64 archive without a zip64 end-of-central-directory locator (truncated?)");
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    bad("zip central directory [", cd_offset, ", +", cd_size, "] lies outside the archive (truncated?)");
  if (count > kMaxEntries) bad("zip archive lists ", count, " entries (limit ", kMaxEntries, ")");
  if (count > cd_size / 46) bad("zip central directory is too small for ", count, " entries (truncated?)");

  entries_.reserve((size_t)count);
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - pos < 46 || rd32(d + pos) != kCentralSig) bad("zip central directory entry ", i, " is corrupt");
    const uint8_t* c = d + pos;
    uint16_t flags = rd16(c + 8);
    ZipEntry z;
    z.method = rd16(c + 10);
    z.crc32 = rd32(c + 16);
    z.compressed_size = rd32(c + 20);
    z.size = rd32(c + 24);
    uint64_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
    uint64_t local = rd32(c + 42);
    if (cd_end - pos - 46 < name_len + extra_len + comment_len) bad("zip central directory entry ", i, " is truncated");
    z.name.assign((const char*)c + 46, (size_t)name_len);
    // zip64 extended information: only the fields saturated in the fixed part are present, in order.
    const uint8_t* x = c + 46 + name_len;
    const uint8_t* xend = x + extra_len;
    while (xend - x >= 4) {
      uint16_t id = rd16(x), len = rd16(x + 2);
      if ((uint64_t)(xend - x - 4) < len) bad("zip entry '", z.name, "' has a truncated extra field");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* fend = f + len;
        auto take = [&](uint64_t* v) {
          if (fend - f < 8) bad("zip entry '", z.name, "' has a truncated zip64 extra field");
          *v = rd64(f);
          f += 8;
        };
        if (z.size == 0xFFFFFFFFu) take(&z.size);
        if (z.compressed_size == 0xFFFFFFFFu) take(&z.compressed_size);
        if (local == 0xFFFFFFFFu) take(&local);
      }
      x += 4 + len;
    }
    if (flags & 1) bad("zip entry '", z.name, "' is encrypted");
    // Local header: its own name / extra lengths decide where the data starts (torch pads with an
    // extra field to align data to 64 bytes).
    if (local > size || size - local < 30 || rd32(d + local) != kLocalSig)
      bad("zip entry '", z.name, "': local header at offset ", local, " is missing or outside the archive");
    uint64_t lname = rd16(d + local + 26), lextra = rd16(d + local + 28);
    if (size - local - 30 < lname + lextra) bad("zip entry '", z.name, "': local header is truncated");
    if (lname != name_len || std::memcmp(d + local + 30, z.name.data(), (size_t)name_len) != 0)
      bad("zip entry '", z.name, "': local header names a different file");
    z.data_offset = local + 30 + lname + lextra;
    if (z.data_offset > size || z.compressed_size > size - z.data_offset)
      bad("zip entry '", z.name, "' (", z.compressed_size, " bytes at offset ", z.data_offset,
          ") extends past the end of the archive (", size, " bytes; truncated?)");
    if (z.method == 0 && z.compressed_size != z.size)
      bad("zip entry '", z.name, "' is stored but its sizes differ (", z.compressed_size, " vs ", z.size, ")");
    if (!index_.emplace(z.name, entries_.size()).second) bad("zip archive has two entries named '", z.name, "'");
    entries_.push_back(std::move(z));
    pos += 46 + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& e, bool verify_crc) const {
  if (e.method != 0)
    fail(ErrorCode::Unsupported, file_.path(), ": zip entry '", e.name, "' is compressed (", method_name(e.method),
         ", method ", e.method,
         "); only stored (uncompressed) entries, as torch.save writes them, are supported — "
         "re-save with torch.save or convert the weights to safetensors");
  const uint8_t* p = file_.data() + e.data_offset;
  if (verify_crc && crc32_update(0, p, (size_t)e.size) != e.crc32)
    fail(ErrorCode::WeightsInvalid, file_.path(), ": zip entry '", e.name, "' fails its CRC-32 check (corrupt file)");
  return p;
}

}  // namespace xpsr
