// Helpers for the io tests: a temp directory, little-endian byte builders, a zip writer (stored
// entries, torch-style 64-byte data alignment) and a pickle opcode writer. Test-only, header-only.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "zip.h"

namespace xpsr_io_test {

using Bytes = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/xpsr_io_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = buf.data();
  }
  ~TempDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) {
    std::string p = dir_ + "/" + name;
    files_.push_back(p);
    return p;
  }
  std::string write(const std::string& name, const Bytes& b) {
    std::string p = path(name);
    std::FILE* f = std::fopen(p.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot write " + p);
    if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
    return p;
  }
  std::string write(const std::string& name, const std::string& s) { return write(name, Bytes(s.begin(), s.end())); }

 private:
  std::string dir_;
  std::vector<std::string> files_;
};

inline Bytes read_all(const std::string& path) {
  Bytes b;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return b;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
  std::fclose(f);
  return b;
}

inline void put16(Bytes& b, uint64_t v) {
  for (int i = 0; i < 2; ++i) b.push_back((uint8_t)(v >> (8 * i)));
}
inline void put32(Bytes& b, uint64_t v) {
  for (int i = 0; i < 4; ++i) b.push_back((uint8_t)(v >> (8 * i)));
}
inline void put64(Bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back((uint8_t)(v >> (8 * i)));
}
inline void append(Bytes& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
inline void append(Bytes& b, const Bytes& s) { b.insert(b.end(), s.begin(), s.end()); }
template <typename T>
inline Bytes as_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// [u64 header length][header][data]
inline Bytes safetensors_bytes(const std::string& header, const Bytes& data, uint64_t header_len_override = 0) {
  Bytes b;
  put64(b, header_len_override ? header_len_override : header.size());
  append(b, header);
  append(b, data);
  return b;
}

// Zip writer: stored entries by default; data aligned to 64 bytes with an extra field as torch does.
class ZipWriter {
 public:
  void add(const std::string& name, const Bytes& data, uint16_t method = 0) {
    Entry e{name, method, xpsr::crc32_update(0, data.data(), data.size()), data.size(), out_.size()};
    size_t header_end = out_.size() + 30 + name.size();
    size_t pad = (64 - (header_end + 4) % 64) % 64;  // extra field: 4-byte header + pad bytes
    put32(out_, 0x04034b50);
    put16(out_, 20);
    put16(out_, 0);
    put16(out_, method);
    put16(out_, 0);
    put16(out_, 0x21);
    put32(out_, e.crc);
    put32(out_, data.size());
    put32(out_, data.size());
    put16(out_, name.size());
    put16(out_, 4 + pad);
    append(out_, name);
    put16(out_, 0x4246);  // "FB" padding field id, as PyTorch writes
    put16(out_, pad);
    out_.insert(out_.end(), pad, 'Z');
    append(out_, data);
    entries_.push_back(e);
  }
  // zip64: central entries carry saturated sizes/offsets plus a zip64 extra field, and the archive
  // ends with a zip64 end-of-central-directory record and locator (as large torch.save files do).
  Bytes finish(bool zip64 = false) const {
    Bytes b = out_;
    size_t cd = b.size();
    for (const auto& e : entries_) {
      put32(b, 0x02014b50);
      put16(b, zip64 ? 45 : 20);
      put16(b, zip64 ? 45 : 20);
      put16(b, 0);
      put16(b, e.method);
      put16(b, 0);
      put16(b, 0x21);
      put32(b, e.crc);
      put32(b, zip64 ? 0xFFFFFFFFu : e.size);
      put32(b, zip64 ? 0xFFFFFFFFu : e.size);
      put16(b, e.name.size());
      put16(b, zip64 ? 28 : 0);
      put16(b, 0);
      put16(b, 0);
      put16(b, 0);
      put32(b, 0);
      put32(b, zip64 ? 0xFFFFFFFFu : e.local);
      append(b, e.name);
      if (zip64) {
        put16(b, 0x0001);
        put16(b, 24);
        put64(b, e.size);   // uncompressed
        put64(b, e.size);   // compressed
        put64(b, e.local);  // local header offset
      }
    }
    size_t cd_size = b.size() - cd;
    if (zip64) {
      size_t rec = b.size();
      put32(b, 0x06064b50);
      put64(b, 44);
      put16(b, 45);
      put16(b, 45);
      put32(b, 0);
      put32(b, 0);
      put64(b, entries_.size());
      put64(b, entries_.size());
      put64(b, cd_size);
      put64(b, cd);
      put32(b, 0x07064b50);
      put32(b, 0);
      put64(b, rec);
      put32(b, 1);
    }
    put32(b, 0x06054b50);
    put16(b, 0);
    put16(b, 0);
    put16(b, zip64 ? 0xFFFF : entries_.size());
    put16(b, zip64 ? 0xFFFF : entries_.size());
    put32(b, zip64 ? 0xFFFFFFFFu : cd_size);
    put32(b, zip64 ? 0xFFFFFFFFu : cd);
    put16(b, 0);
    return b;
  }

 private:
  struct Entry {
    std::string name;
    uint16_t method;
    uint32_t crc;
    uint64_t size, local;
  };
  Bytes out_;
  std::vector<Entry> entries_;
};

// Pickle opcode writer (names as in CPython's pickletools).
struct PickleWriter {
  Bytes b;
  PickleWriter& op(uint8_t c) {
    b.push_back(c);
    return *this;
  }
  PickleWriter& proto(uint8_t v) { return op(0x80).op(v); }
  PickleWriter& global(const std::string& module, const std::string& name) {
    op('c');
    append(b, module + "\n" + name + "\n");
    return *this;
  }
  PickleWriter& stack_global(const std::string& module, const std::string& name) {
    return short_unicode(module).short_unicode(name).op(0x93);
  }
  PickleWriter& unicode(const std::string& s) {
    op('X');
    put32(b, s.size());
    append(b, s);
    return *this;
  }
  PickleWriter& short_unicode(const std::string& s) {
    op(0x8c).op((uint8_t)s.size());
    append(b, s);
    return *this;
  }
  PickleWriter& binput(uint8_t i) { return op('q').op(i); }
  PickleWriter& binget(uint8_t i) { return op('h').op(i); }
  PickleWriter& memoize() { return op(0x94); }
  PickleWriter& mark() { return op('('); }
  PickleWriter& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').op((uint8_t)v);
    if (v >= 0 && v < 65536) {
      op('M');
      put16(b, v);
      return *this;
    }
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      put32(b, (uint64_t)v);
      return *this;
    }
    op(0x8a).op(8);
    put64(b, (uint64_t)v);
    return *this;
  }
  PickleWriter& int_tuple(const std::vector<int64_t>& v) {
    if (v.size() <= 3) {
      if (v.empty()) return op(')');
      for (auto x : v) integer(x);
      return op((uint8_t)(0x84 + v.size()));
    }
    mark();
    for (auto x : v) integer(x);
    return op('t');
  }
  // One torch tensor exactly as torch.save pickles it (protocol 2 flavour).
  PickleWriter& tensor(const std::string& storage_type, const std::string& key, int64_t storage_numel, int64_t offset,
                       const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    mark().unicode("storage").global("torch", storage_type).unicode(key).unicode("cpu").integer(storage_numel).op('t');
    op('Q');
    integer(offset).int_tuple(size).int_tuple(stride);
    op(0x89);                                              // requires_grad False
    global("collections", "OrderedDict").op(')').op('R');  // backward hooks
    op('t').op('R');
    return *this;
  }
  PickleWriter& stop() { return op('.'); }
};

}  // namespace xpsr_io_test
