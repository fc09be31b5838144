// See mmap_file.h.
#include "mmap_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "../../common/error.h"

#if defined(_WIN32)
#include <sys/stat.h>
#define XPSR_HAVE_MMAP 0
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XPSR_HAVE_MMAP 1
#endif

namespace xpsr {

namespace {
[[noreturn]] void open_error(const std::string& path, int err) {
  if (err == ENOENT || err == ENOTDIR) fail(ErrorCode::WeightsMissing, path, ": file not found");
  fail(ErrorCode::Io, path, ": cannot open: ", std::strerror(err));
}
}  // namespace

MappedFile::~MappedFile() {
#if XPSR_HAVE_MMAP
  if (map_) ::munmap(map_, size_);
#endif
}

void MappedFile::release_pages(const uint8_t* p, size_t n) const {
#if XPSR_HAVE_MMAP
  if (!map_ || !p || p < data_ || n == 0 || (size_t)(p - data_) > size_ || n > size_ - (size_t)(p - data_)) return;
  static const uintptr_t page = (uintptr_t)::sysconf(_SC_PAGESIZE);
  uintptr_t b = ((uintptr_t)p + page - 1) / page * page, e = ((uintptr_t)p + n) / page * page;
  if (e > b) ::madvise((void*)b, e - b, MADV_DONTNEED);  // a failure only means the pages stay resident
#else
  (void)p, (void)n;
#endif
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(const std::string& path, std::vector<uint8_t> bytes) {
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->owned_ = std::move(bytes);
  f->data_ = f->owned_.data();
  f->size_ = f->owned_.size();
  return f;
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
#if XPSR_HAVE_MMAP
  int fd;
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) open_error(path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(ErrorCode::Io, path, ": cannot stat: ", std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::Io, path, ": is a directory, not a weights file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::Io, path, ": is not a regular file");
  }
  if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
    ::close(fd);
    fail(ErrorCode::Io, path, ": file is too large to map");
  }
  size_t size = (size_t)st.st_size;
  if (size == 0) {
    ::close(fd);
    return f;
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m != MAP_FAILED) {
    ::close(fd);
    f->map_ = m;
    f->data_ = (const uint8_t*)m;
    f->size_ = size;
    return f;
  }
  // mmap refused (e.g. some network / FUSE file systems): read the file into memory.
  try {
    f->owned_.resize(size);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    fail(ErrorCode::OutOfMemory, path, ": cannot map the file and cannot allocate ", size, " bytes to read it");
  }
  size_t done = 0;
  while (done < size) {
    ssize_t got = ::read(fd, f->owned_.data() + done, size - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      int err = got < 0 ? errno : 0;
      ::close(fd);
      if (err) fail(ErrorCode::Io, path, ": read error: ", std::strerror(err));
      fail(ErrorCode::Io, path, ": file shrank while reading (", done, " of ", size, " bytes)");
    }
    done += (size_t)got;
  }
  ::close(fd);
  f->data_ = f->owned_.data();
  f->size_ = size;
  return f;
#else
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) open_error(path, errno);
  if (st.st_mode & S_IFDIR) fail(ErrorCode::Io, path, ": is a directory, not a weights file");
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) open_error(path, errno);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  for (;;) {
    size_t got = std::fread(buf, 1, sizeof buf, fp);
    bytes.insert(bytes.end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  bool bad = std::ferror(fp) != 0;
  std::fclose(fp);
  if (bad) fail(ErrorCode::Io, path, ": read error");
  f->owned_ = std::move(bytes);
  f->data_ = f->owned_.data();
  f->size_ = f->owned_.size();
  return f;
#endif
}

}  // namespace xpsr
