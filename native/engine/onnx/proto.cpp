// ONNX protobuf encoding (field numbers: onnx/onnx.proto).
#include "proto.h"

#include <cstring>

#include "../../common/dtype.h"
#include "../../common/error.h"

namespace xpsr::onnx {

void Pb::varint(uint64_t v) {
  while (v >= 0x80) {
    buf.push_back((char)(v | 0x80));
    v >>= 7;
  }
  buf.push_back((char)v);
}

void Pb::f32(int field, float v) {
  tag(field, 5);
  char b[4];
  std::memcpy(b, &v, 4);  // little-endian hosts only (x86-64, arm64)
  buf.append(b, 4);
}

void Pb::bytes(int field, const void* p, size_t n) {
  tag(field, 2);
  varint(n);
  buf.append((const char*)p, n);
}

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::F32: return 4;
    case ElemType::I64: return 8;
    case ElemType::F16: return 2;
  }
  return 0;
}

size_t Initializer::numel() const {
  size_t n = 1;
  for (auto d : dims) n *= (size_t)d;
  return n;
}

std::string Initializer::data() const {
  if (!is_weight()) return bytes;
  const size_t n = numel();
  std::string out(n * elem_size(type), '\0');
  auto src = [&](size_t i) -> float {
    if (!transpose2d) return f32[i];
    // element (r, c) of the written [dims0, dims1] tensor is source (c, r) of [dims1, dims0]
    size_t rows = (size_t)dims[0], cols = (size_t)dims[1];
    size_t r = i / cols, c = i % cols;
    return f32[c * rows + r];
  };
  if (type == ElemType::F32) {
    float* o = (float*)out.data();
    for (size_t i = 0; i < n; ++i) o[i] = src(i);
  } else if (type == ElemType::F16) {
    uint16_t* o = (uint16_t*)out.data();
    for (size_t i = 0; i < n; ++i) o[i] = f32_to_f16(src(i));
  } else {
    fail(ErrorCode::Internal, "onnx: weight '", name, "' has a non-float element type");
  }
  return out;
}

uint64_t weight_bytes(const Model& m) {
  uint64_t b = 0;
  for (auto& i : m.inits)
    if (i.is_weight()) b += i.nbytes();
  return b;
}

// ---- external data ----------------------------------------------------------------------------------

ExternalData::ExternalData(const std::string& dir, const std::string& file_name)
    : path_(dir + "/" + file_name), file_name_(file_name) {
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) fail(ErrorCode::Io, "cannot create ", path_);
}

ExternalData::~ExternalData() {
  if (f_) std::fclose(f_);
}

std::pair<uint64_t, uint64_t> ExternalData::place(const Initializer& init) {
  auto it = placed_.find(init.name);
  if (it != placed_.end()) {
    if (it->second.second != init.nbytes())
      fail(ErrorCode::Internal, "onnx: weight '", init.name, "' placed twice with different sizes");
    return it->second;
  }
  std::string d = init.data();
  const uint64_t align = d.size() >= (1u << 20) ? 4096 : 64;
  uint64_t off = (end_ + align - 1) / align * align;
  if (off > end_) {
    std::string pad(off - end_, '\0');
    std::fwrite(pad.data(), 1, pad.size(), f_);
  }
  if (std::fwrite(d.data(), 1, d.size(), f_) != d.size()) fail(ErrorCode::Io, "cannot write ", path_, " (disk full?)");
  end_ = off + d.size();
  placed_[init.name] = {off, (uint64_t)d.size()};
  return {off, (uint64_t)d.size()};
}

// ---- messages -----------------------------------------------------------------------------------------

static Pb encode_attr(const Attr& a) {
  // AttributeProto: name 1, f 2, i 3, s 4, floats 7, ints 8, type 20 (FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7)
  Pb p;
  p.str(1, a.name);
  switch (a.kind) {
    case Attr::Int: p.i64(3, a.i), p.i64(20, 2); break;
    case Attr::Float: p.f32(2, a.f), p.i64(20, 1); break;
    case Attr::String: p.str(4, a.s), p.i64(20, 3); break;
    case Attr::Ints:
      for (auto v : a.ints) p.i64(8, v);
      p.i64(20, 7);
      break;
    case Attr::Floats:
      for (auto v : a.floats) p.f32(7, v);
      p.i64(20, 6);
      break;
  }
  return p;
}

static Pb encode_node(const Node& n) {
  // NodeProto: input 1, output 2, name 3, op_type 4, attribute 5
  Pb p;
  for (auto& s : n.inputs) p.str(1, s);
  for (auto& s : n.outputs) p.str(2, s);
  if (!n.name.empty()) p.str(3, n.name);
  p.str(4, n.op);
  for (auto& a : n.attrs) p.msg(5, encode_attr(a));
  return p;
}

static Pb encode_tensor(const Initializer& t, ExternalData* ext) {
  // TensorProto: dims 1, data_type 2, name 8, raw_data 9, external_data 13 (key 1, value 2), data_location 14
  Pb p;
  for (auto d : t.dims) p.i64(1, d);
  p.i64(2, (int)t.type);
  p.str(8, t.name);
  if (ext && t.is_weight()) {
    auto [off, len] = ext->place(t);
    auto entry = [&](const std::string& k, const std::string& v) {
      Pb e;
      e.str(1, k), e.str(2, v);
      p.msg(13, e);
    };
    entry("location", ext->file_name());
    entry("offset", std::to_string(off));
    entry("length", std::to_string(len));
    p.i64(14, 1);  // EXTERNAL
  } else {
    std::string d = t.data();
    p.bytes(9, d.data(), d.size());
  }
  return p;
}

static Pb encode_value_info(const ValueInfo& v) {
  // ValueInfoProto: name 1, type 2; TypeProto: tensor_type 1; Tensor: elem_type 1, shape 2;
  // TensorShapeProto: dim 1; Dimension: dim_value 1, dim_param 2
  Pb shape;
  for (size_t i = 0; i < v.dims.size(); ++i) {
    Pb d;
    if (i < v.dim_params.size() && !v.dim_params[i].empty()) d.str(2, v.dim_params[i]);
    else d.i64(1, v.dims[i]);
    shape.msg(1, d);
  }
  Pb tt;
  tt.i64(1, (int)v.type);
  tt.msg(2, shape);
  Pb type;
  type.msg(1, tt);
  Pb p;
  p.str(1, v.name);
  p.msg(2, type);
  return p;
}

std::string encode_model(const Model& m, ExternalData* external) {
  if (!external && weight_bytes(m) > (uint64_t)2000 * 1024 * 1024)
    fail(ErrorCode::InvalidArgument, "onnx: '", m.graph_name, "' has ", weight_bytes(m) >> 20,
         " MiB of weights, over protobuf's 2 GiB limit for one file: export with external data");
  // GraphProto: node 1, name 2, initializer 5, doc_string 10, input 11, output 12
  Pb g;
  for (auto& n : m.nodes) g.msg(1, encode_node(n));
  g.str(2, m.graph_name);
  for (auto& t : m.inits) g.msg(5, encode_tensor(t, external));
  if (!m.doc.empty()) g.str(10, m.doc);
  for (auto& v : m.inputs) g.msg(11, encode_value_info(v));
  for (auto& v : m.outputs) g.msg(12, encode_value_info(v));
  // ModelProto: ir_version 1, producer_name 2, producer_version 3, doc_string 6, graph 7, opset_import 8,
  // metadata_props 14. OperatorSetIdProto: domain 1 ("" = ai.onnx), version 2.
  Pb p;
  p.i64(1, 8);
  p.str(2, m.producer);
  if (!m.producer_version.empty()) p.str(3, m.producer_version);
  p.msg(7, g);
  Pb ops;
  ops.str(1, "");
  ops.i64(2, m.opset);
  p.msg(8, ops);
  for (auto& kv : m.metadata) {
    Pb e;
    e.str(1, kv.first), e.str(2, kv.second);
    p.msg(14, e);
  }
  return p.buf;
}

void write_file(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(ErrorCode::Io, "cannot create ", path);
  size_t w = std::fwrite(bytes.data(), 1, bytes.size(), f);
  bool ok = w == bytes.size() && std::fclose(f) == 0;
  if (!ok) fail(ErrorCode::Io, "cannot write ", path, " (disk full?)");
}

}  // namespace xpsr::onnx
