// Building blocks shared by the UNet, the ControlNet and the VAE, each loaded from its exact checkpoint
// prefix and applied to a Graph. Math: docs/architecture.md §3. Shapes in comments are PyTorch order
// [N,C,H,W] / [B,L,D]; the graph stores them channels-last (see graph.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "../graph.h"
#include "../weights.h"

namespace xpsr {

using WeightRef = std::shared_ptr<Weight>;

// Conv2d with bias. prefix.weight [K, C, k, k], prefix.bias [K].
struct Conv {
  WeightRef w, b;
  int stride = 1;
  Pad pad = Pad::same(1);
  void load(WeightLoader& ld, const std::string& prefix, int K, int C, int k, int stride = 1, bool bias = true);
  Val operator()(Graph& g, Val x, Val residual = {}) const {
    return g.conv2d(x, w.get(), b.get(), stride, pad, residual);
  }
};

// Linear (also a 1x1 conv stored as [N, K, 1, 1]). prefix.weight [N, K], prefix.bias [N].
struct Linear {
  WeightRef w, b;
  void load(WeightLoader& ld, const std::string& prefix, int N, int K, bool bias = true);
  Val operator()(Graph& g, Val x, Val residual = {}) const { return g.linear(x, w.get(), b.get(), residual); }
};

// Norm affine parameters: prefix.weight / prefix.bias [C].
struct Norm {
  WeightRef gamma, beta;
  void load(WeightLoader& ld, const std::string& prefix, int C);
};

// ResnetBlock2D (§3.2): GN-SiLU-conv1 (+ Linear(SiLU(temb))) GN-SiLU-conv2, + shortcut (1x1 if Cin != Cout).
struct ResnetBlock {
  Norm norm1, norm2;
  Conv conv1, conv2;
  Linear time_emb_proj;  // absent in the VAE
  Linear shortcut;       // conv_shortcut as a 1x1 linear on channels-last rows; absent if Cin == Cout
  bool has_temb = false, has_shortcut = false;
  int groups = 32;
  float eps = 1e-5f;
  void load(WeightLoader& ld, const std::string& prefix, int Cin, int Cout, int temb_dim, int groups, float eps);
  // x [N,Cin,H,W], temb_act = SiLU(temb) [N,T] (or {} for the VAE) -> [N,Cout,H,W]
  Val operator()(Graph& g, Val x, Val temb_act) const;
};

// Multi-head attention with separate or fused projections. Self-attention fuses q|k|v into one
// [3C, C] GEMM; cross-attention fuses k|v of the context into one [2C, D] GEMM.
struct Attention {
  Linear qkv;    // self: [3C, C]
  Linear q, kv;  // cross: [C, C] and [2C, D]
  Linear out;    // to_out.0 [C, C] + bias
  bool self = true;
  int C = 0, heads = 1;
  // keys: to_q/to_k/to_v/to_out.0 (or the VAE's legacy query/key/value/proj_attn); q/k/v bias optional.
  void load(WeightLoader& ld, const std::string& prefix, int C, int ctx_dim, int heads, bool self, bool qkv_bias,
            bool legacy_names = false);
  // x tokens [B, L, C]; ctx [B, Lk, D] (ignored for self); adds `residual` (tokens) if given.
  Val operator()(Graph& g, Val x, Val ctx, Val residual) const;
};

// Transformer2DModel (§3.6) with `layers` BasicTransformerBlocks: GN(eps 1e-6) -> proj_in -> [self-attn,
// cross-attn(ctx), GEGLU FF] -> proj_out -> + x. The context may be text [B,77,D] or image tokens.
struct Transformer2D {
  struct Block {
    Norm norm1, norm2, norm3;
    Attention attn1, attn2;
    Linear ff_in, ff_out;  // ff.net.0.proj [8C, C], ff.net.2 [C, 4C]
  };
  Norm norm;
  Linear proj_in, proj_out;  // 1x1 convs (use_linear_projection false) or linears (true): same math
  std::vector<Block> blocks;
  int C = 0, groups = 32;
  void load(WeightLoader& ld, const std::string& prefix, int C, int ctx_dim, int heads, int layers, int groups);
  // x [N,C,H,W], ctx tokens [N,L,D] -> [N,C,H,W]
  Val operator()(Graph& g, Val x, Val ctx) const;
};

// Two Transformer2D modules (same width, heads and depth) applied in lockstep, so that their attention ops
// pair up into attention_pair ops (one launch for both on CUDA). Same math as calling each alone.
std::pair<Val, Val> transformer_pair(Graph& g, const Transformer2D& A, Val xa, Val ctx_a, const Transformer2D& B,
                                     Val xb, Val ctx_b);

// Semantic-Fusion Attention (§4.3): high-level text attention, and when the low-level branch exists and
// a low-level context is given, a low-level text attention on the same input and a connect block whose
// keys/values are the low-level result's spatial tokens. Without a low-level context: bypass (out = H).
struct SFA {
  Transformer2D high, low, connect;
  bool has_low = false;
  // base = e.g. "down_blocks.0." and j = layer index: loads attentions.j, attentions_lowlevel.j, attentions_connect.j
  void load(WeightLoader& ld, const std::string& base, int j, int C, int ctx_dim, int heads, int layers, int groups,
            bool with_low);
  Val operator()(Graph& g, Val x, Val ctx_high, Val ctx_low, const std::string& tap_base, int j) const;
};

// Sinusoidal timestep features (§3.4) computed on the host in float32 exactly as diffusers does.
std::vector<float> timestep_features(float t, int dim, bool flip_sin_to_cos, float freq_shift);

// TimestepEmbedding: Linear(dim -> T) -> SiLU -> Linear(T -> T).
struct TimeEmbedding {
  Linear linear_1, linear_2;
  void load(WeightLoader& ld, const std::string& prefix, int in_dim, int T);
  Val operator()(Graph& g, Val features) const;
};

// Tokens view of a channels-last feature map: [N,C,H,W] -> [N, H*W, C] (free).
Val tokens(Graph& g, Val x);

}  // namespace xpsr
