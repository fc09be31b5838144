// TensorFile::open: maps the file and picks the reader by content, not by extension.
#include <cstdio>
#include <cstring>

#include "io_internal.h"

namespace xpsr {

std::unique_ptr<TensorFile> open_tensor_file(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* d = file->data();
  const size_t n = file->size();
  if (n == 0) fail(ErrorCode::WeightsInvalid, path, ": file is empty (0 bytes)");
  if (n >= 4 && d[0] == 'P' && d[1] == 'K' && ((d[2] == 3 && d[3] == 4) || (d[2] == 5 && d[3] == 6)))
    return open_torch_zip(std::move(file));
  // safetensors: 8-byte length, then the JSON header which starts with '{'. The length itself is
  // validated by the reader so a truncated file or an absurd length gets a precise message.
  if (n >= 9 && d[8] == '{') return open_safetensors(std::move(file));
  std::string first;
  for (size_t i = 0; i < n && i < 8; ++i) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", d[i]);
    first += buf;
  }
  if (d[0] == 0x80 && n >= 2 && d[1] <= 5)
    fail(ErrorCode::WeightsInvalid, path,
         ": looks like a bare pickle or a legacy (PyTorch < 1.6) torch.save file (first bytes ", first,
         "); only safetensors and zip-format torch.save files are supported — convert it to safetensors");
  fail(ErrorCode::WeightsInvalid, path, ": not a safetensors file or a PyTorch zip archive (first bytes ", first, ")");
}

std::unique_ptr<TensorFile> TensorFile::open(const std::string& path) {
  return open_tensor_file(MappedFile::open(path));
}

}  // namespace xpsr
