// Host conversions of tensor views (to_f32 / to_i64) and the safetensors writer.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "io_internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xpsr-native reads little-endian weight files in place and needs a little-endian host"
#endif

namespace xpsr {

namespace {
void check_view(const TensorView& t) {
  uint64_t numel = 1;
  for (auto d : t.shape) {
    if (d < 0 || !checked_mul_u64(numel, (uint64_t)d, &numel))
      fail(ErrorCode::InvalidArgument, "tensor '", t.name, "': invalid shape ", shape_str(t.shape));
  }
  uint64_t need = 0;
  if (!checked_mul_u64(numel, dtype_size(t.dtype), &need) || need != t.nbytes || (need && !t.data))
    fail(ErrorCode::InvalidArgument, "tensor '", t.name, "': ", dtype_name(t.dtype), " ", shape_str(t.shape), " needs ",
         need, " bytes but the view holds ", t.nbytes);
}

template <typename S, typename D, typename F>
void convert(const TensorView& t, std::vector<D>& out, F f) {
  const size_t n = t.nbytes / sizeof(S);
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    S s;
    std::memcpy(&s, t.data + i * sizeof(S), sizeof(S));  // data may be unaligned
    out[i] = f(s);
  }
}

void json_escape(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += (char)c;
  }
  out += '"';
}
}  // namespace

std::vector<float> to_f32(const TensorView& t) {
  check_view(t);
  std::vector<float> out;
  switch (t.dtype) {
    case DType::F32: convert<float>(t, out, [](float v) { return v; }); break;
    case DType::F16: convert<uint16_t>(t, out, [](uint16_t v) { return f16_to_f32(v); }); break;
    case DType::BF16: convert<uint16_t>(t, out, [](uint16_t v) { return bf16_to_f32(v); }); break;
    case DType::F64: convert<double>(t, out, [](double v) { return (float)v; }); break;
    case DType::I64: convert<int64_t>(t, out, [](int64_t v) { return (float)v; }); break;
    case DType::I32: convert<int32_t>(t, out, [](int32_t v) { return (float)v; }); break;
    case DType::I16: convert<int16_t>(t, out, [](int16_t v) { return (float)v; }); break;
    case DType::I8: convert<int8_t>(t, out, [](int8_t v) { return (float)v; }); break;
    case DType::U8: convert<uint8_t>(t, out, [](uint8_t v) { return (float)v; }); break;
    case DType::Bool: fail(ErrorCode::WeightsInvalid, "tensor '", t.name, "' is BOOL; cannot convert it to f32");
  }
  return out;
}

std::vector<int64_t> to_i64(const TensorView& t) {
  check_view(t);
  std::vector<int64_t> out;
  switch (t.dtype) {
    case DType::I64: convert<int64_t>(t, out, [](int64_t v) { return v; }); break;
    case DType::I32: convert<int32_t>(t, out, [](int32_t v) { return (int64_t)v; }); break;
    case DType::I16: convert<int16_t>(t, out, [](int16_t v) { return (int64_t)v; }); break;
    case DType::I8: convert<int8_t>(t, out, [](int8_t v) { return (int64_t)v; }); break;
    case DType::U8: convert<uint8_t>(t, out, [](uint8_t v) { return (int64_t)v; }); break;
    default:
      fail(ErrorCode::WeightsInvalid, "tensor '", t.name, "' is ", dtype_name(t.dtype),
           ", expected an integer dtype (I64 I32 I16 I8 U8)");
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__") fail(ErrorCode::InvalidArgument, path, ": '__metadata__' cannot be a tensor name");
    if (!seen.insert(t.name).second) fail(ErrorCode::InvalidArgument, path, ": duplicate tensor name '", t.name, "'");
    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.shape = t.shape;
    v.data = t.bytes.data();
    v.nbytes = t.bytes.size();
    check_view(v);
  }
  // Data laid out by decreasing element size (stable), so every tensor is aligned to its element size
  // without gaps (the reference implementation does the same); the header keeps the given order.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return dtype_size(tensors[a].dtype) > dtype_size(tensors[b].dtype); });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t off = 0;
  for (size_t i : order) {
    begin[i] = off;
    off += tensors[i].bytes.size();
  }
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& kv : metadata) {
      if (!f2) h += ',';
      f2 = false;
      json_escape(h, kv.first);
      h += ':';
      json_escape(h, kv.second);
    }
    h += '}';
    first = false;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!first) h += ',';
    first = false;
    json_escape(h, t.name);
    h += ":{\"dtype\":\"";
    h += dtype_name(t.dtype);
    h += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) h += (d ? "," : "") + std::to_string(t.shape[d]);
    h += "],\"data_offsets\":[" + std::to_string(begin[i]) + "," + std::to_string(begin[i] + t.bytes.size()) + "]}";
  }
  h += '}';
  while (h.size() % 8) h += ' ';  // pad so the data section starts 8-byte aligned

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(ErrorCode::Io, path, ": cannot create: ", std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint8_t)((uint64_t)h.size() >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(h.data(), 1, h.size(), f) == h.size();
  for (size_t i : order) {
    const auto& b = tensors[i].bytes;
    if (ok && !b.empty()) ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
  }
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(path.c_str());
    fail(ErrorCode::Io, path, ": write failed: ", std::strerror(err));
  }
}

}  // namespace xpsr
