// CLIP text encoder (HF CLIPTextModel, xpsr-architecture.md §2.1, §3.8): token + position embeddings,
// pre-LN blocks with causal multi-head self-attention (biases, scale 1/sqrt(d)) and a quick_gelu MLP,
// final LayerNorm -> last_hidden_state [B, 77, D]. Padding tokens are not masked (SD-1.5 behaviour).
#pragma once
#include "../config.h"
#include "blocks.h"

namespace xpsr {

struct ClipTextEncoder {
  struct Layer {
    Norm ln1, ln2;
    Attention attn;  // q_proj/k_proj/v_proj/out_proj, fused into one q|k|v GEMM
    Linear fc1, fc2;
  };
  ClipTextEncoderConfig config;
  WeightRef token_embedding, position_embedding;
  std::vector<Layer> layers;
  Norm final_ln;

  void load(WeightLoader& ld, const ClipTextEncoderConfig& c);
  // ids, positions: input_ids values of length B*L -> last_hidden_state [B, L, D]
  Val forward(Graph& g, Val ids, Val positions, int B, int L) const;
};

}  // namespace xpsr
