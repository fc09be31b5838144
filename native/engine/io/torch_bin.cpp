// PyTorch zip state dicts (torch.save since 1.6; `.bin` / `.pt` / `.pth`):
//   <folder>/data.pkl            the pickled dict, read with the restricted VM (pickle.h)
//   <folder>/data/<key>          raw little-endian storage bytes (stored, 64-byte aligned)
//   <folder>/byteorder           optional, "little" (big-endian archives are refused)
//   <folder>/version, .data/...  ignored
// Tensors must be C-contiguous views of their storage (any storage offset); views point into the map.
#include <cstring>

#include "io_internal.h"
#include "pickle.h"
#include "zip.h"

namespace xpsr {

std::unique_ptr<TensorFile> open_torch_zip(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  ZipArchive zip(*file);

  const ZipEntry* pkl = nullptr;
  for (const auto& e : zip.entries()) {
    const std::string& n = e.name;
    size_t slash = n.find('/');
    bool match = n == "data.pkl" ||
                 (slash != std::string::npos && slash > 0 && n.compare(slash, std::string::npos, "/data.pkl") == 0);
    if (!match) continue;
    if (pkl) fail(ErrorCode::WeightsInvalid, path, ": zip archive has two pickles ('", pkl->name, "' and '", n, "')");
    pkl = &e;
  }
  if (!pkl)
    fail(ErrorCode::WeightsInvalid, path,
         ": zip archive has no '<folder>/data.pkl'; not a PyTorch state dict saved by torch.save");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));

  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    const uint8_t* p = zip.data(*bo, true);
    std::string order((const char*)p, (size_t)bo->size);
    if (order == "big") fail(ErrorCode::Unsupported, path, ": big-endian PyTorch archives are not supported");
    if (order != "little") fail(ErrorCode::WeightsInvalid, path, ": '", bo->name, "' is neither 'little' nor 'big'");
  }

  const uint8_t* pkl_data = zip.data(*pkl, true);
  std::vector<PickledTensor> tensors = unpickle_state_dict(pkl_data, (size_t)pkl->size, path);

  auto out = std::make_unique<BasicTensorFile>(file);
  for (auto& t : tensors) {
    auto bad = [&](ErrorCode code, const auto&... parts) { fail(code, path, ": tensor '", t.name, "': ", parts...); };
    const std::string storage_name = prefix + "data/" + t.storage_key;
    const ZipEntry* se = zip.find(storage_name);
    if (!se) bad(ErrorCode::WeightsInvalid, "storage '", storage_name, "' is missing from the archive");
    const uint8_t* storage = zip.data(*se);
    const uint64_t esize = dtype_size(t.dtype);
    uint64_t storage_bytes = 0;
    if (!checked_mul_u64(t.storage_numel, esize, &storage_bytes) || se->size < storage_bytes)
      bad(ErrorCode::WeightsInvalid, "storage '", storage_name, "' holds ", se->size, " bytes but the pickle says ",
          t.storage_numel, " ", dtype_name(t.dtype), " elements");

    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (t.shape[i] < 0) bad(ErrorCode::WeightsInvalid, "size ", shape_str(t.shape), " has a negative dimension");
      if (!checked_mul_u64(numel, (uint64_t)t.shape[i], &numel)) overflow = true;
    }
    if (overflow) bad(ErrorCode::WeightsInvalid, "size ", shape_str(t.shape), " overflows");
    if (t.storage_offset < 0) bad(ErrorCode::WeightsInvalid, "negative storage offset ", t.storage_offset);

    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.shape = t.shape;
    if (numel == 0) {
      v.data = storage;
      v.nbytes = 0;
    } else {
      uint64_t end = 0;
      if ((uint64_t)t.storage_offset > UINT64_MAX - numel ||
          !checked_mul_u64((uint64_t)t.storage_offset + numel, esize, &end) || end > storage_bytes)
        bad(ErrorCode::WeightsInvalid, "elements [", t.storage_offset, ", +", numel, ") lie outside storage '",
            storage_name, "' of ", t.storage_numel, " elements");
      // C-contiguous: stride[i] == product of the later sizes (dims of size 1 may have any stride).
      int64_t expect = 1;
      for (size_t i = t.shape.size(); i-- > 0;) {
        if (t.shape[i] != 1 && t.stride[i] != expect)
          bad(ErrorCode::Unsupported, "is not contiguous (size ", shape_str(t.shape), ", stride ", shape_str(t.stride),
              "); only C-contiguous tensors are supported — save tensors with .contiguous() or convert to safetensors");
        expect *= t.shape[i];  // <= numel, which fits the storage (checked above)
      }
      v.data = storage + (uint64_t)t.storage_offset * esize;
      v.nbytes = (size_t)(numel * esize);
    }
    if (!out->add(std::move(v))) bad(ErrorCode::WeightsInvalid, "duplicate tensor name");
  }
  return out;
}

}  // namespace xpsr
