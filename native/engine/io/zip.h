// Minimal read-only zip reader for torch.save archives: central directory (zip64 included) parsed with
// bounds checks, entries located through their local headers, data handed out in place (no copy).
// Only stored (method 0) entries can be read, which is what torch.save writes. Internal to io/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mmap_file.h"

namespace xpsr {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate, ...
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;         // uncompressed
  uint64_t data_offset = 0;  // of the (possibly compressed) bytes in the file
};

class ZipArchive {
 public:
  // Throws Error(WeightsInvalid) naming file.path() on any structural problem.
  explicit ZipArchive(const MappedFile& file);
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // Bytes of a stored entry (valid while the MappedFile lives). Compressed entries: Error(Unsupported).
  // verify_crc: check the CRC-32 (used for small entries such as data.pkl).
  const uint8_t* data(const ZipEntry& e, bool verify_crc = false) const;

 private:
  const MappedFile& file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n);  // crc32_update(0, ...) for a fresh CRC

}  // namespace xpsr
