// CLIP text encoder forward.
#include "clip_text_encoder.h"

#include <cmath>

namespace xpsr {

void ClipTextEncoder::load(WeightLoader& ld, const ClipTextEncoderConfig& c) {
  config = c;
  const int D = c.hidden_size;
  token_embedding =
      ld.get("text_model.embeddings.token_embedding.weight", {c.vocab_size, D}, WeightKind::Embedding, Init::Embedding);
  position_embedding = ld.get("text_model.embeddings.position_embedding.weight", {c.max_position_embeddings, D},
                              WeightKind::Embedding, Init::Embedding);
  ld.ignore_suffix("embeddings.position_ids");  // int64 buffer present in some files
  layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    std::string p = "text_model.encoder.layers." + std::to_string(i);
    Layer& l = layers[i];
    l.ln1.load(ld, p + ".layer_norm1", D);
    // HF names: self_attn.{q,k,v,out}_proj. Fuse q|k|v into one [3D, D] weight.
    std::vector<float> w, b;
    for (const char* n : {"q_proj", "k_proj", "v_proj"}) {
      auto pw = ld.fetch(p + ".self_attn." + n + ".weight", {D, D}, Init::FanIn);
      auto pb = ld.fetch(p + ".self_attn." + n + ".bias", {D}, Init::Zero);
      w.insert(w.end(), pw.begin(), pw.end());
      b.insert(b.end(), pb.begin(), pb.end());
    }
    l.attn.self = true, l.attn.C = D, l.attn.heads = c.num_heads;
    l.attn.qkv.w = ld.upload(p + ".self_attn.qkv.weight", WeightKind::Linear, {3 * D, D}, w);
    l.attn.qkv.b = ld.upload(p + ".self_attn.qkv.bias", WeightKind::Vector, {3 * D}, b);
    l.attn.out.load(ld, p + ".self_attn.out_proj", D, D);
    l.ln2.load(ld, p + ".layer_norm2", D);
    l.fc1.load(ld, p + ".mlp.fc1", c.intermediate_size, D);
    l.fc2.load(ld, p + ".mlp.fc2", D, c.intermediate_size);
  }
  final_ln.load(ld, "text_model.final_layer_norm", D);
}

Val ClipTextEncoder::forward(Graph& g, Val ids, Val positions, int B, int L) const {
  const int D = config.hidden_size, H = config.num_heads;
  const float eps = config.layer_norm_eps, scale = 1.0f / std::sqrt((float)(D / H));
  Val x = g.add(g.embedding(token_embedding.get(), ids), g.embedding(position_embedding.get(), positions));
  x = g.reshape(x, Dims{B, 1, L, D});
  g.tap("hidden_states.0", x);
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    Val h = g.layer_norm(x, l.ln1.gamma.get(), l.ln1.beta.get(), eps);
    Val qkv = l.attn.qkv(g, h);  // [B, L, 3D]
    Val a = g.attention(g.cols(qkv, 0, D), g.cols(qkv, D, D), g.cols(qkv, 2 * D, D), H, scale, /*causal=*/true);
    x = l.attn.out(g, a, x);
    h = g.layer_norm(x, l.ln2.gamma.get(), l.ln2.beta.get(), eps);
    h = g.unary(l.fc1(g, h), config.quick_gelu ? UnaryOp::QuickGelu : UnaryOp::GeluErf);
    x = l.fc2(g, h, x);
    g.tap("hidden_states." + std::to_string(i + 1), x);
  }
  return g.layer_norm(x, final_ln.gamma.get(), final_ln.beta.get(), eps);
}

}  // namespace xpsr
