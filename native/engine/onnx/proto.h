// A small ONNX file writer: the handful of protobuf messages an ONNX model is made of (ModelProto,
// GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto), encoded by hand in the protobuf
// wire format. Write-only and dependency-free: the exporter needs nothing else from protobuf, and a
// protobuf library (or protoc-generated code) would be a build dependency for ~300 lines of encoding.
// Field numbers follow onnx/onnx.proto (IR version 8). Every file it writes is loaded back by
// onnxruntime in test/onnx*.test.mjs; proto_test.cpp checks the encodings byte by byte.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace xpsr::onnx {

// Protobuf wire-format writer into a byte string.
class Pb {
 public:
  std::string buf;
  void varint(uint64_t v);
  void tag(int field, int wire_type) { varint(((uint64_t)field << 3) | (uint64_t)wire_type); }
  void i64(int field, int64_t v) { tag(field, 0), varint((uint64_t)v); }  // int32/int64/enum (two's complement)
  void f32(int field, float v);
  void bytes(int field, const void* p, size_t n);
  void str(int field, const std::string& s) { bytes(field, s.data(), s.size()); }
  void msg(int field, const Pb& m) { bytes(field, m.buf.data(), m.buf.size()); }
};

// TensorProto.DataType values used here.
enum class ElemType : int { F32 = 1, I64 = 7, F16 = 10 };
size_t elem_size(ElemType t);

struct Attr {
  enum Kind { Int, Float, Ints, Floats, String } kind = Int;
  std::string name;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string s;
  static Attr make_int(const std::string& n, int64_t v) {
    Attr a;
    a.kind = Int, a.name = n, a.i = v;
    return a;
  }
  static Attr make_float(const std::string& n, float v) {
    Attr a;
    a.kind = Float, a.name = n, a.f = v;
    return a;
  }
  static Attr make_ints(const std::string& n, std::vector<int64_t> v) {
    Attr a;
    a.kind = Ints, a.name = n, a.ints = std::move(v);
    return a;
  }
  static Attr make_string(const std::string& n, const std::string& v) {
    Attr a;
    a.kind = String, a.name = n, a.s = v;
    return a;
  }
};

struct Node {
  std::string op, name;
  std::vector<std::string> inputs, outputs;  // "" = an omitted optional input
  std::vector<Attr> attrs;
};

// An initializer. Small constants carry their bytes; weights point at host f32 data (converted to the
// element type when written, so a model is never held twice in memory).
struct Initializer {
  std::string name;
  ElemType type = ElemType::F32;
  std::vector<int64_t> dims;
  std::string bytes;           // little-endian data of `type` (constants)
  const float* f32 = nullptr;  // or: host f32 source (weights), numel = prod(dims)
  bool transpose2d = false;    // f32 source is [rows, cols] = [dims[1], dims[0]]; write it transposed
  bool is_weight() const { return f32 != nullptr; }
  size_t numel() const;
  size_t nbytes() const { return numel() * elem_size(type); }
  // The encoded data (converted / transposed as requested).
  std::string data() const;
};

struct ValueInfo {
  std::string name;
  ElemType type = ElemType::F32;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_params;  // per dim: "" = fixed (dims[i]), else a symbolic name
};

struct Model {
  int opset = 17;
  std::string producer = "xpsr-native", producer_version, graph_name, doc;
  std::vector<Node> nodes;
  std::vector<Initializer> inits;
  std::vector<ValueInfo> inputs, outputs;
  std::map<std::string, std::string> metadata;
};

// Where weights go: inline (raw_data) or one external data file shared by several models (the same
// network exported at several sizes references each weight once). Offsets are 4096-aligned for tensors
// of 1 MiB and more so runtimes can map them.
class ExternalData {
 public:
  ExternalData(const std::string& dir, const std::string& file_name);
  ~ExternalData();
  const std::string& file_name() const { return file_name_; }
  // Writes the initializer's data once per name; returns {offset, length}.
  std::pair<uint64_t, uint64_t> place(const Initializer& init);
  uint64_t bytes() const { return end_; }

 private:
  std::string path_, file_name_;
  FILE* f_ = nullptr;
  uint64_t end_ = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> placed_;
};

// Encodes the model. Weights go to `external` when given (constants stay inline), else inline; an
// inline model over 2 GiB is refused (protobuf's limit) with a message saying to use external data.
std::string encode_model(const Model& m, ExternalData* external);
void write_file(const std::string& path, const std::string& bytes);
// Sum of weight bytes of the model (decides inline vs external).
uint64_t weight_bytes(const Model& m);

}  // namespace xpsr::onnx
