// Restricted pickle VM for torch.save state dicts (data.pkl inside the zip archive). It knows only the
// opcodes a state dict uses (protocols 2-5) and only the globals torch uses to rebuild tensors:
//   collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter /
//   _rebuild_parameter_with_state, torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage.
// Any other global (os.system, builtins.eval, torch.storage._load_from_bytes, numpy...) is refused when
// it is named, before anything else happens. Nothing is ever executed: REDUCE of an allowed global
// builds a plain record. Memo, stack, mark depth, object count and string sizes are bounded.
// Internal to native/engine/io.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../../common/dtype.h"

namespace xpsr {

struct PickledTensor {
  std::string name;
  DType dtype = DType::F32;
  std::string storage_key;     // archive/data/<key>
  uint64_t storage_numel = 0;  // elements of the storage, as the persistent id says
  int64_t storage_offset = 0;  // in elements
  std::vector<int64_t> shape, stride;
};

// Runs the VM over `data` and returns the state dict's tensors in insertion order. If the pickled
// object is a dict without tensors whose "state_dict" (or "model") entry is a dict, that one is used.
// Non-tensor scalar values (None, numbers, strings) are skipped. Throws Error(WeightsInvalid) with
// messages starting "<what>: ".
std::vector<PickledTensor> unpickle_state_dict(const uint8_t* data, size_t size, const std::string& what);

}  // namespace xpsr
