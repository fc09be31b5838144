// The ONNX writer's wire encoding, byte by byte (onnxruntime loading every exported file is checked in
// test/onnx.test.mjs), and the op attributes the exporter reads from Graph nodes.
#include <cstring>

#include "../../test/test.h"
#include "../graph.h"
#include "host_backend.h"
#include "lower.h"
#include "proto.h"

using namespace xpsr;
using namespace xpsr::onnx;

static std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back((char)x);
  return s;
}

TEST(onnx_proto_varints_and_fields) {
  Pb p;
  p.varint(0), p.varint(1), p.varint(127), p.varint(128), p.varint(300);
  CHECK(p.buf == bytes({0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02}));
  Pb n;
  n.i64(1, -1);  // negative int64: ten bytes of two's complement
  CHECK(n.buf == bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
  Pb s;
  s.str(4, "Conv");
  CHECK(s.buf == bytes({0x22, 0x04, 'C', 'o', 'n', 'v'}));
  Pb f;
  f.f32(2, 1.0f);  // wire type 5, little-endian IEEE
  CHECK(f.buf == bytes({0x15, 0x00, 0x00, 0x80, 0x3f}));
}

TEST(onnx_proto_model_layout) {
  Model m;
  m.graph_name = "g";
  Node n;
  n.op = "Relu", n.inputs = {"x"}, n.outputs = {"y"};
  m.nodes.push_back(n);
  ValueInfo x;
  x.name = "x", x.dims = {2};
  m.inputs.push_back(x);
  x.name = "y";
  m.outputs.push_back(x);
  std::string b = encode_model(m, nullptr);
  // ModelProto starts with ir_version = 8 (field 1, varint) and names the producer (field 2).
  CHECK(b.substr(0, 2) == bytes({0x08, 0x08}));
  CHECK(b.substr(2, 13) == bytes({0x12, 0x0b}) + "xpsr-native");
  // The graph (field 7) holds the node (field 1): input "x", output "y", op_type "Relu".
  std::string node = bytes({0x0a, 0x01, 'x', 0x12, 0x01, 'y', 0x22, 0x04}) + "Relu";
  CHECK(b.find(bytes({0x0a, (int)node.size()}) + node) != std::string::npos);
  // opset_import (field 8): domain "" and version 17.
  CHECK(b.find(bytes({0x42, 0x04, 0x0a, 0x00, 0x10, 0x11})) != std::string::npos);
}

TEST(onnx_weights_convert_and_transpose) {
  std::vector<float> w{1, 2, 3, 4, 5, 6};  // [2, 3]
  Initializer in;
  in.name = "w", in.f32 = w.data(), in.dims = {3, 2}, in.transpose2d = true;
  std::string d = in.data();
  float t[6];
  std::memcpy(t, d.data(), 24);
  CHECK(t[0] == 1 && t[1] == 4 && t[2] == 2 && t[3] == 5 && t[4] == 3 && t[5] == 6);
  in.transpose2d = false, in.type = ElemType::F16, in.dims = {6};
  d = in.data();
  CHECK(d.size() == 12);
  uint16_t h;
  std::memcpy(&h, d.data() + 2, 2);
  CHECK(h == 0x4000);  // 2.0 in half precision
}

TEST(onnx_graph_records_op_attributes_and_views) {
  auto be = make_host_weight_backend();
  std::vector<float> cw(8 * 4 * 9, 0.f), lw(6 * 8, 0.f), v(8, 1.f);
  auto conv = be->upload("c.weight", WeightKind::Conv, {8, 4, 3, 3}, cw.data());
  auto lin = be->upload("l.weight", WeightKind::Linear, {6, 8}, lw.data());
  auto gam = be->upload("n.weight", WeightKind::Vector, {8}, v.data());
  Graph g(*be);
  Val x = g.input("x", Dims{1, 5, 7, 4});
  Val c = g.conv2d(x, conv.get(), nullptr, 2, Pad{0, 0, 1, 1});
  Val n = g.group_norm(c, gam.get(), gam.get(), 4, 1e-6f, true);
  Val t = g.reshape(n, Dims{1, 1, g.dims(n).h * g.dims(n).w, 8});
  Val l = g.linear(g.cols(t, 0, 8), lin.get());
  Val s = g.slice(l, 2, 3);
  g.output("y", s);
  const auto& nodes = g.nodes();
  CHECK(nodes.size() == 4);
  CHECK(nodes[0].op == "conv2d" && nodes[0].attrs.w == conv.get() && nodes[0].attrs.stride == 2);
  CHECK(nodes[0].attrs.pad.top == 0 && nodes[0].attrs.pad.bottom == 1 && nodes[0].args.size() == 2 &&
        nodes[0].args[1] == -1);
  CHECK(nodes[1].attrs.groups == 4 && nodes[1].attrs.silu && nodes[1].attrs.eps == 1e-6f);
  CHECK(nodes[3].attrs.c0 == 2 && nodes[3].attrs.cols == 3);
  CHECK(g.values()[t.id].view == Graph::View::Reshape);
  CHECK(g.values()[nodes[2].args[0]].view == Graph::View::Cols);
  // Lowering, NCHW: the strided asymmetric-pad Conv, one InstanceNormalization, and the linear on the
  // feature map's tokens as a 1x1 Conv (no transposes). NHWC: Conv between Transposes, ReduceMean
  // statistics, the linear as MatMul.
  LowerSpec spec;
  spec.name = "t";
  InputBinding ib;
  ib.kind = InputBinding::Map, ib.graph_name = "x", ib.onnx_name = "x";
  spec.inputs.push_back(ib);
  OutputBinding ob;
  ob.graph_name = "y", ob.onnx_name = "y";
  spec.outputs.push_back(ob);
  auto count = [](const Model& mm, const char* op) {
    int k = 0;
    for (auto& node : mm.nodes) k += node.op == op;
    return k;
  };
  Model m = lower(g, spec);
  for (auto& node : m.nodes)
    if (node.op == "Conv")
      for (auto& a : node.attrs)
        if (a.name == "pads" && node.inputs[1] == "c.weight") CHECK(a.ints == (std::vector<int64_t>{0, 0, 1, 1}));
  CHECK(count(m, "Conv") == 2 && count(m, "InstanceNormalization") == 1 && count(m, "MatMul") == 0);
  CHECK(count(m, "Transpose") == 0);
  spec.layout = Layout::CL;
  Model cl = lower(g, spec);
  CHECK(count(cl, "Conv") == 1 && count(cl, "ReduceMean") == 2 && count(cl, "MatMul") == 1);
  CHECK(count(cl, "Transpose") == 2);  // after the Conv (its NCHW input is the model input), and to NCHW at the output
  // the output is the slice of the token view [1,1,6,3], as NCHW
  CHECK(m.outputs.size() == 1 && m.outputs[0].dims == (std::vector<int64_t>{1, 3, 1, 6}));
  CHECK(m.nodes.back().op == "Identity" && m.nodes.back().outputs[0] == "y");
}
