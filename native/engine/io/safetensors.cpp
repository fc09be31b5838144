// safetensors reader: [u64 LE header length N][N bytes JSON header][data section]. Everything in the
// header is checked before a view is handed out (see tensor_file.h); the data itself is not copied.
#include <algorithm>
#include <cstring>

#include "../json.h"
#include "io_internal.h"

namespace xpsr {

namespace {
constexpr uint64_t kMaxHeader = 100u << 20;  // same limit as the reference implementation
constexpr size_t kMaxRank = 32;

bool get_int(const Json& j, int64_t* out) {
  if (!j.is_number()) return false;
  try {
    *out = j.as_int();
  } catch (const Error&) {
    return false;
  }
  return true;
}

std::string json_brief(const Json& j) {
  switch (j.type()) {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return j.as_bool() ? "true" : "false";
    case Json::Type::Number: {
      std::ostringstream o;
      o << j.as_number();
      return o.str();
    }
    case Json::Type::String: return "\"" + j.as_string().substr(0, 40) + "\"";
    case Json::Type::Array: return "an array";
    case Json::Type::Object: return "an object";
  }
  return "?";
}

struct Range {
  uint64_t begin, end;
  const std::string* name;
};
}  // namespace

bool parse_safetensors_dtype(const std::string& s, DType* out) {
  static const struct {
    const char* name;
    DType t;
  } table[] = {{"F32", DType::F32}, {"F16", DType::F16},  {"BF16", DType::BF16}, {"F64", DType::F64},
               {"I64", DType::I64}, {"I32", DType::I32},  {"I16", DType::I16},   {"I8", DType::I8},
               {"U8", DType::U8},   {"BOOL", DType::Bool}};
  for (const auto& e : table)
    if (s == e.name) {
      *out = e.t;
      return true;
    }
  return false;
}

std::unique_ptr<TensorFile> open_safetensors(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* base = file->data();
  const size_t size = file->size();
  if (size < 8)
    fail(ErrorCode::WeightsInvalid, path, ": file is too small for safetensors (", size,
         " bytes; the header length field alone takes 8)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > kMaxHeader)
    fail(ErrorCode::WeightsInvalid, path, ": safetensors header length ", n, " is over the ", kMaxHeader,
         "-byte limit (corrupt file or not safetensors)");
  if (n > size - 8)
    fail(ErrorCode::WeightsInvalid, path, ": safetensors header length ", n, " exceeds the ", size - 8,
         " bytes that follow it (truncated file?)");
  if (n < 2 || base[8] != '{') fail(ErrorCode::WeightsInvalid, path, ": safetensors header does not start with '{'");

  Json header;
  try {
    header = Json::parse(std::string((const char*)base + 8, (size_t)n), "safetensors header", 8);
  } catch (const Error& e) {
    fail(ErrorCode::WeightsInvalid, path, ": ", e.what());
  }
  if (!header.is_object()) fail(ErrorCode::WeightsInvalid, path, ": safetensors header is not a JSON object");

  const uint8_t* data = base + 8 + n;
  const uint64_t data_size = size - 8 - n;
  auto out = std::make_unique<BasicTensorFile>(file);
  std::vector<Range> ranges;
  ranges.reserve(header.size());

  for (const auto& kv : header.as_object()) {
    const std::string& key = kv.first;
    const Json& entry = kv.second;
    if (key == "__metadata__") {
      if (!entry.is_object()) fail(ErrorCode::WeightsInvalid, path, ": __metadata__ is not a JSON object");
      for (const auto& m : entry.as_object()) {
        if (!m.second.is_string())
          fail(ErrorCode::WeightsInvalid, path, ": __metadata__ value of '", m.first, "' is ", json_brief(m.second),
               ", expected a string");
        out->mutable_metadata()[m.first] = m.second.as_string();
      }
      continue;
    }
    auto bad = [&](const auto&... parts) { fail(ErrorCode::WeightsInvalid, path, ": tensor '", key, "': ", parts...); };
    if (!entry.is_object()) bad("header entry is ", json_brief(entry), ", expected an object");
    const Json* jd = entry.find("dtype");
    const Json* js = entry.find("shape");
    const Json* jo = entry.find("data_offsets");
    if (!jd || !js || !jo) bad("header entry lacks ", !jd ? "\"dtype\"" : !js ? "\"shape\"" : "\"data_offsets\"");
    if (!jd->is_string()) bad("dtype is ", json_brief(*jd), ", expected a string");
    TensorView v;
    v.name = key;
    if (!parse_safetensors_dtype(jd->as_string(), &v.dtype))
      bad("unsupported dtype '", jd->as_string(), "' (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");
    if (!js->is_array()) bad("shape is ", json_brief(*js), ", expected an array");
    if (js->size() > kMaxRank) bad("shape has ", js->size(), " dimensions (limit ", kMaxRank, ")");
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < js->size(); ++i) {
      const Json& d = js->as_array()[i];
      int64_t dim;
      if (!get_int(d, &dim)) bad("shape[", i, "] is ", json_brief(d), ", expected a non-negative integer");
      if (dim < 0) bad("shape[", i, "] is negative (", dim, ")");
      v.shape.push_back(dim);
      if (!checked_mul_u64(numel, (uint64_t)dim, &numel)) overflow = true;
    }
    uint64_t need = 0;
    if (overflow || !checked_mul_u64(numel, dtype_size(v.dtype), &need))
      bad(dtype_name(v.dtype), " ", shape_str(v.shape), " is too large (size overflows)");
    if (!jo->is_array() || jo->size() != 2) bad("data_offsets is ", json_brief(*jo), ", expected [begin, end]");
    int64_t b, e;
    if (!get_int(jo->as_array()[0], &b) || !get_int(jo->as_array()[1], &e) || b < 0 || e < 0)
      bad("data_offsets [", json_brief(jo->as_array()[0]), ", ", json_brief(jo->as_array()[1]),
          "] are not non-negative integers");
    if (b > e) bad("data_offsets [", b, ", ", e, "] end before they begin");
    if ((uint64_t)e > data_size)
      bad("data_offsets [", b, ", ", e, "] lie outside the data section (", data_size, " bytes; truncated file?)");
    if ((uint64_t)(e - b) != need)
      bad("data_offsets [", b, ", ", e, "] hold ", e - b, " bytes but ", dtype_name(v.dtype), " ", shape_str(v.shape),
          " needs ", need);
    v.data = data + b;
    v.nbytes = (size_t)need;
    if (!out->add(v)) bad("duplicate tensor name");
    if (need > 0) ranges.push_back({(uint64_t)b, (uint64_t)e, &key});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range& p = ranges[i - 1];
    const Range& c = ranges[i];
    if (c.begin < p.end)
      fail(ErrorCode::WeightsInvalid, path, ": tensor '", *c.name, "': data_offsets [", c.begin, ", ", c.end,
           "] overlap tensor '", *p.name, "' [", p.begin, ", ", p.end, "]");
  }
  return out;
}

}  // namespace xpsr
