// Read-only view of a whole file: memory-mapped (POSIX mmap) when possible, otherwise read into an
// owned buffer. Also wraps an in-memory buffer (tests, fuzzing). Internal to native/engine/io.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xpsr {

class MappedFile {
 public:
  // Errors: WeightsMissing (no such file), Io (directory, not a regular file, permission, read error).
  // A zero-size file opens fine (size() == 0); format readers report it.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // An in-memory "file" named `path` (for messages).
  static std::shared_ptr<const MappedFile> from_bytes(const std::string& path, std::vector<uint8_t> bytes);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool mapped() const { return map_ != nullptr; }
  // Drops the mapped pages lying wholly inside [p, p + n) from this process (madvise DONTNEED); the
  // mapping stays valid and re-reads them from the file if touched. No-op when the file is not mapped.
  void release_pages(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // mmap base when mapped
  std::vector<uint8_t> owned_;
};

}  // namespace xpsr
