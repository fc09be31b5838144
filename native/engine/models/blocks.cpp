// Shared blocks: loading by checkpoint key and the forward math over Graph ops.
#include "blocks.h"

#include <cmath>

namespace xpsr {

void Conv::load(WeightLoader& ld, const std::string& prefix, int K, int C, int k, int stride_, bool bias) {
  w = ld.get(prefix + ".weight", {K, C, k, k}, WeightKind::Conv, Init::FanIn);
  if (bias) b = ld.get(prefix + ".bias", {K}, WeightKind::Vector, Init::Zero);
  stride = stride_;
  pad = Pad::same(k / 2);
}

void Linear::load(WeightLoader& ld, const std::string& prefix, int N, int K, bool bias) {
  w = ld.get(prefix + ".weight", {N, K}, WeightKind::Linear, Init::FanIn);
  if (bias) b = ld.get(prefix + ".bias", {N}, WeightKind::Vector, Init::Zero);
}

void Norm::load(WeightLoader& ld, const std::string& prefix, int C) {
  gamma = ld.get(prefix + ".weight", {C}, WeightKind::Vector, Init::One);
  beta = ld.get(prefix + ".bias", {C}, WeightKind::Vector, Init::Zero);
}

Val tokens(Graph& g, Val x) {
  Dims d = g.dims(x);
  return g.reshape(x, Dims{d.n, 1, d.h * d.w, d.c});
}

// ---- ResnetBlock2D ----------------------------------------------------------------------------------

void ResnetBlock::load(WeightLoader& ld, const std::string& p, int Cin, int Cout, int temb_dim, int groups_,
                       float eps_) {
  groups = groups_, eps = eps_;
  norm1.load(ld, p + ".norm1", Cin);
  conv1.load(ld, p + ".conv1", Cout, Cin, 3);
  has_temb = temb_dim > 0;
  if (has_temb) time_emb_proj.load(ld, p + ".time_emb_proj", Cout, temb_dim);
  norm2.load(ld, p + ".norm2", Cout);
  conv2.load(ld, p + ".conv2", Cout, Cout, 3);
  has_shortcut = Cin != Cout;
  if (has_shortcut) shortcut.load(ld, p + ".conv_shortcut", Cout, Cin);
}

Val ResnetBlock::operator()(Graph& g, Val x, Val temb_act) const {
  // x [N,Cin,H,W]
  Val h = g.group_norm(x, norm1.gamma.get(), norm1.beta.get(), groups, eps, /*silu=*/true);
  h = conv1(g, h);                                                 // [N,Cout,H,W]
  if (has_temb) h = g.channel_add(h, time_emb_proj(g, temb_act));  // + Linear(SiLU(temb))[:, :, None, None]
  h = g.group_norm(h, norm2.gamma.get(), norm2.beta.get(), groups, eps, true);
  // dropout: identity at inference
  Val s = has_shortcut ? shortcut(g, x) : x;  // conv_shortcut (1x1) or identity
  return conv2(g, h, s);                      // (s + conv2(h)) / output_scale_factor(1)
}

// ---- Attention ------------------------------------------------------------------------------------

static WeightRef cat_rows(WeightLoader& ld, const std::string& name, const std::vector<std::string>& keys, int rows,
                          int cols, bool is_bias) {
  std::vector<float> all;
  for (auto& k : keys) {
    auto part = is_bias ? ld.fetch(k, {rows}, Init::Zero) : ld.fetch(k, {rows, cols}, Init::FanIn);
    all.insert(all.end(), part.begin(), part.end());
  }
  int n = rows * (int)keys.size();
  if (is_bias) return ld.upload(name, WeightKind::Vector, {n}, all);
  return ld.upload(name, WeightKind::Linear, {n, cols}, all);
}

void Attention::load(WeightLoader& ld, const std::string& p, int C_, int ctx_dim, int heads_, bool self_, bool qkv_bias,
                     bool legacy) {
  C = C_, heads = heads_, self = self_;
  std::string kq = p + (legacy ? ".query" : ".to_q"), kk = p + (legacy ? ".key" : ".to_k"),
              kv_ = p + (legacy ? ".value" : ".to_v"), ko = p + (legacy ? ".proj_attn" : ".to_out.0");
  if (self) {
    qkv.w = cat_rows(ld, p + ".to_qkv.weight", {kq + ".weight", kk + ".weight", kv_ + ".weight"}, C, C, false);
    if (qkv_bias) qkv.b = cat_rows(ld, p + ".to_qkv.bias", {kq + ".bias", kk + ".bias", kv_ + ".bias"}, C, 0, true);
  } else {
    q.load(ld, kq, C, C, qkv_bias);
    kv.w = cat_rows(ld, p + ".to_kv.weight", {kk + ".weight", kv_ + ".weight"}, C, ctx_dim, false);
    if (qkv_bias) kv.b = cat_rows(ld, p + ".to_kv.bias", {kk + ".bias", kv_ + ".bias"}, C, 0, true);
  }
  out.load(ld, ko, C, C, true);
}

Val Attention::operator()(Graph& g, Val x, Val ctx, Val residual) const {
  // x [B, L, C]; ctx [B, Lk, D]
  const float scale = 1.0f / std::sqrt((float)(C / heads));
  Val a;
  if (self) {
    Val t = qkv(g, x);  // [B, L, 3C]
    a = g.attention(g.cols(t, 0, C), g.cols(t, C, C), g.cols(t, 2 * C, C), heads, scale);
  } else {
    Val qq = q(g, x);    // [B, L, C]
    Val t = kv(g, ctx);  // [B, Lk, 2C]
    a = g.attention(qq, g.cols(t, 0, C), g.cols(t, C, C), heads, scale);
  }
  return out(g, a, residual);  // to_out.0 (+ residual); to_out.1 is dropout
}

// ---- Transformer2D --------------------------------------------------------------------------------

void Transformer2D::load(WeightLoader& ld, const std::string& p, int C_, int ctx_dim, int heads, int layers,
                         int groups_) {
  C = C_, groups = groups_;
  norm.load(ld, p + ".norm", C);
  proj_in.load(ld, p + ".proj_in", C, C);
  blocks.resize(layers);
  for (int i = 0; i < layers; ++i) {
    std::string b = p + ".transformer_blocks." + std::to_string(i);
    Block& blk = blocks[i];
    blk.norm1.load(ld, b + ".norm1", C);
    blk.attn1.load(ld, b + ".attn1", C, C, heads, true, false);
    blk.norm2.load(ld, b + ".norm2", C);
    blk.attn2.load(ld, b + ".attn2", C, ctx_dim, heads, false, false);
    blk.norm3.load(ld, b + ".norm3", C);
    blk.ff_in.load(ld, b + ".ff.net.0.proj", 8 * C, C);
    blk.ff_out.load(ld, b + ".ff.net.2", C, 4 * C);
  }
  proj_out.load(ld, p + ".proj_out", C, C);
}

Val Transformer2D::operator()(Graph& g, Val x, Val ctx) const {
  // x [N,C,H,W], ctx [N,L,D]
  Dims d = g.dims(x);
  Val h = g.group_norm(x, norm.gamma.get(), norm.beta.get(), groups, 1e-6f, false);
  Val t = proj_in(g, tokens(g, h));  // [N, HW, C]
  for (const Block& b : blocks) {
    Val n1 = g.layer_norm(t, b.norm1.gamma.get(), b.norm1.beta.get(), 1e-5f);
    t = b.attn1(g, n1, Val{}, t);  // self-attention + residual
    Val n2 = g.layer_norm(t, b.norm2.gamma.get(), b.norm2.beta.get(), 1e-5f);
    t = b.attn2(g, n2, ctx, t);  // cross-attention + residual
    Val n3 = g.layer_norm(t, b.norm3.gamma.get(), b.norm3.beta.get(), 1e-5f);
    Val f = g.geglu(b.ff_in(g, n3));  // [N, HW, 4C]
    t = b.ff_out(g, f, t);            // FF + residual
  }
  Val out = proj_out(g, t, tokens(g, x));  // proj_out(...) + x
  return g.reshape(out, d);
}

std::pair<Val, Val> transformer_pair(Graph& g, const Transformer2D& A, Val xa, Val ctx_a, const Transformer2D& B,
                                     Val xb, Val ctx_b) {
  // xa, xb [N,C,H,W]; ctx_a, ctx_b [N,L,D] (different L and D allowed)
  if (A.C != B.C || A.blocks.size() != B.blocks.size() || A.blocks.empty() ||
      A.blocks[0].attn1.heads != B.blocks[0].attn1.heads)
    return {A(g, xa, ctx_a), B(g, xb, ctx_b)};
  const Dims d = g.dims(xa);
  const int C = A.C, N = d.n, heads = A.blocks[0].attn1.heads;
  const float scale = 1.0f / std::sqrt((float)(C / heads));
  const Transformer2D* T[2] = {&A, &B};
  Val x[2] = {xa, xb}, ctx[2] = {ctx_a, ctx_b}, t[2];
  for (int i = 0; i < 2; ++i) {
    Val h = g.group_norm(x[i], T[i]->norm.gamma.get(), T[i]->norm.beta.get(), T[i]->groups, 1e-6f, false);
    t[i] = T[i]->proj_in(g, tokens(g, h));  // [N, HW, C]
  }
  for (size_t l = 0; l < A.blocks.size(); ++l) {
    const Transformer2D::Block* b[2] = {&A.blocks[l], &B.blocks[l]};
    Val qkv[2];
    for (int i = 0; i < 2; ++i)
      qkv[i] = b[i]->attn1.qkv(g, g.layer_norm(t[i], b[i]->norm1.gamma.get(), b[i]->norm1.beta.get(), 1e-5f));
    Val a = g.attention_pair(g.cols(qkv[0], 0, C), g.cols(qkv[0], C, C), g.cols(qkv[0], 2 * C, C), g.cols(qkv[1], 0, C),
                             g.cols(qkv[1], C, C), g.cols(qkv[1], 2 * C, C), heads, scale);
    for (int i = 0; i < 2; ++i) t[i] = b[i]->attn1.out(g, g.rows(a, i * N, N), t[i]);  // self-attention + residual
    Val q[2], kv[2];
    for (int i = 0; i < 2; ++i) {
      q[i] = b[i]->attn2.q(g, g.layer_norm(t[i], b[i]->norm2.gamma.get(), b[i]->norm2.beta.get(), 1e-5f));
      kv[i] = b[i]->attn2.kv(g, ctx[i]);
    }
    a = g.attention_pair(q[0], g.cols(kv[0], 0, C), g.cols(kv[0], C, C), q[1], g.cols(kv[1], 0, C), g.cols(kv[1], C, C),
                         heads, scale);
    for (int i = 0; i < 2; ++i) {
      t[i] = b[i]->attn2.out(g, g.rows(a, i * N, N), t[i]);  // cross-attention + residual
      Val f = g.geglu(b[i]->ff_in(g, g.layer_norm(t[i], b[i]->norm3.gamma.get(), b[i]->norm3.beta.get(), 1e-5f)));
      t[i] = b[i]->ff_out(g, f, t[i]);
    }
  }
  Val out[2];
  for (int i = 0; i < 2; ++i) out[i] = g.reshape(T[i]->proj_out(g, t[i], tokens(g, x[i])), d);
  return {out[0], out[1]};
}

// ---- SFA ------------------------------------------------------------------------------------------

void SFA::load(WeightLoader& ld, const std::string& base, int j, int C, int ctx_dim, int heads, int layers, int groups,
               bool with_low) {
  std::string js = std::to_string(j);
  high.load(ld, base + "attentions." + js, C, ctx_dim, heads, layers, groups);
  has_low = with_low;
  if (with_low) {
    low.load(ld, base + "attentions_lowlevel." + js, C, ctx_dim, heads, layers, groups);
    connect.load(ld, base + "attentions_connect." + js, C, C, heads, layers, groups);
  }
}

Val SFA::operator()(Graph& g, Val x, Val ctx_high, Val ctx_low, const std::string& tap_base, int j) const {
  std::string js = std::to_string(j);
  if (!has_low || !ctx_low) {  // bypass: low-level and connect weights unused
    Val H = high(g, x, ctx_high);
    g.tap(tap_base + "attentions." + js, H);
    return H;
  }
  // The high- and low-level branches read the same input: run them in lockstep so each pair of their
  // attentions is one op.
  auto [H, L] = transformer_pair(g, high, x, ctx_high, low, x, ctx_low);
  g.tap(tap_base + "attentions." + js, H);
  g.tap(tap_base + "attentions_lowlevel." + js, L);
  Val out = connect(g, H, tokens(g, L));  // Q from H, K/V from the low-level result's tokens
  g.tap(tap_base + "attentions_connect." + js, out);
  return out;
}

// ---- timestep embedding ---------------------------------------------------------------------------

std::vector<float> timestep_features(float t, int dim, bool flip_sin_to_cos, float freq_shift) {
  // diffusers get_timestep_embedding, all float32: exponent = -ln(10000) * k / (half - shift)
  if (dim < 1) fail(ErrorCode::Internal, "timestep_features: dimension ", dim);  // config.cpp keeps it >= 1
  int half = dim / 2;
  std::vector<float> out(dim, 0.f);
  const float log_max = (float)std::log(10000.0);
  for (int k = 0; k < half; ++k) {
    float e = -log_max * (float)k;
    e = e / ((float)half - freq_shift);
    float f = std::exp(e);
    float arg = t * f;
    float s = std::sin(arg), c = std::cos(arg);
    if (flip_sin_to_cos) out[k] = c, out[half + k] = s;
    else out[k] = s, out[half + k] = c;
  }
  return out;  // odd dims: last entry zero-padded, as diffusers
}

void TimeEmbedding::load(WeightLoader& ld, const std::string& p, int in_dim, int T) {
  linear_1.load(ld, p + ".linear_1", T, in_dim);
  linear_2.load(ld, p + ".linear_2", T, T);
}

Val TimeEmbedding::operator()(Graph& g, Val features) const { return linear_2(g, g.silu(linear_1(g, features))); }

}  // namespace xpsr
