// Lowering of an engine Graph (native/engine/graph.h) to an ONNX model: walks the recorded node list in
// order, keeps the nodes that reach an output (as Plan does) and emits, per op, a few standard ONNX ops
// (opset 17). Weights come from the host-weight backend (host_backend.h).
//
// Layout. Engine values are channels-last (NHWC rows). ONNX tensors exist here in two forms: CL
// ([n,h,w,c]) and CF ([n,c,h,w]); each value is materialised in the form an op needs, and converted
// (Transpose, or Reshape when h*w or c is 1) at most once per form. Layout::CF keeps feature maps NCHW
// (convolutions, norms, upsampling and 1x1 linears on maps run NCHW; transformer token math runs CL);
// Layout::CL keeps everything channels-last with a Transpose pair around each Conv. Inputs and outputs
// are always PyTorch layout (NCHW maps, [B,L,D] sequences).
//
// Decompositions: GroupNorm = Reshape + InstanceNormalization (CF) or ReduceMean statistics (CL), then
// the affine; attention = MatMul/Softmax/MatMul per head; GEGLU and GELU via Erf; SiLU = x*Sigmoid(x);
// nearest upsampling = Resize (2x) or two Gathers (any size); timestep features (sinusoids) in-graph.
// fp16: weights and activations f16; norms and softmax computed in f32 (Casts around them), like the
// CUDA backend; model inputs and outputs stay f32.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "../graph.h"
#include "proto.h"

namespace xpsr::onnx {

enum class Layout { CF, CL };

struct InputBinding {
  enum Kind {
    Map,        // ONNX input [N,C,H,W] f32
    Seq,        // ONNX input [B,L,D] f32
    Timestep,   // ONNX input [N] f32 -> sinusoidal features [N, dim] (diffusers get_timestep_embedding)
    Ids,        // ONNX input [B,L] int64 (a graph input_ids value of B*L ids)
    Positions,  // no ONNX input: constant 0..L-1 (broadcast over the batch)
  } kind = Map;
  std::string graph_name, onnx_name;
  int dim = 0, seq_len = 0;  // Timestep: feature width; Ids/Positions: L
  bool flip_sin_to_cos = true;
  float freq_shift = 0.f;
};

struct OutputBinding {
  enum Kind { Map, Seq, Vec } kind = Map;  // [N,C,H,W], [B,L,D], [N,C]
  std::string graph_name, onnx_name;
};

struct LowerSpec {
  std::string name;  // graph name
  std::vector<InputBinding> inputs;
  std::vector<OutputBinding> outputs;
  // axpby nodes (by node index) whose factor is an ONNX input [1] instead of a constant (the ControlNet's
  // conditioning scale): y = a * input.
  std::map<int, std::string> scalar_inputs;
  Layout layout = Layout::CF;
  bool fp16 = false;
  bool dynamic_batch = false;  // batch dims of inputs/outputs are symbolic ("batch")
};

// Builds the ONNX model of `g`. Throws Error(Unsupported) for a graph shape the lowering cannot express.
Model lower(const Graph& g, const LowerSpec& spec);

}  // namespace xpsr::onnx
