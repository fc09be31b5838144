// attention vs the CPU backend on the SD-1.5 / XPSR shapes: self-attention and SFA / pixel attention over
// 4096 tokens (64x64 latent, heads 8 x 40), 1024 x 80, 256 x 160, 64 x 160 (mid), text cross-attention
// (Lk = 77), packed q|k|v column slices, CLIP's causal 77 x 77 (12 x 64), the tiny test dims 8/16/32,
// odd token counts (9x9 and 65x47 latents), the generic path (VAE's single 512-wide head, head dim 24,
// an unaligned slice) and attention_multi (several problems in one launch).
// For the long sequences the CPU reference computes a subset of query rows (first/last 64 and a middle
// block of each batch) against all keys; the GPU computes everything.
// Tolerance: rtol 2^-10 (output rounding) + atol 2^-8 * rms(ref). The tensor-core kernel rounds the
// un-normalised probabilities P to fp16 before P.V (as FA2 does); that adds ~2^-11/sqrt(3) * rms(O) per
// element (a random walk over the keys), so atol leaves > 10 sigma of margin.
#include <algorithm>

#include "cuda_test_util.h"

using namespace xpsr_cuda_test;

namespace {

struct AttnCase {
  const char* name;
  int B, Lq, Lk, heads, D;
  bool causal = false;
  bool packed = false;  // q/k/v are column slices of one [B*L, 3*heads*D] buffer (needs Lq == Lk)
  int offset = 0;       // extra element offset of every pointer (0: 16-byte aligned)
  int ref_block = 0;    // 0: CPU computes all rows; else blocks of this many rows at start/middle/end
  float amp = 1.0f;     // scale of q: scores ~ N(0, amp^2); large amp = peaky softmax (online rescaling)
};

Tol attn_tol(const std::vector<float>& ref) { return {1.0 / 1024, rms(ref) / 256 + 1e-6}; }

std::vector<std::pair<int, int>> ref_rows(const AttnCase& c) {
  if (!c.ref_block || c.Lq <= 3 * c.ref_block) return {{0, c.Lq}};
  const int r = c.ref_block;
  return {{0, r}, {c.Lq / 2 - r / 2, r}, {c.Lq - r, r}};
}

// Sets up q/k/v on both backends and returns the per-backend AttentionArgs for output buffer o.
struct AttnSetup {
  int width, ldq, ldk, ldv, ldo;
  std::unique_ptr<Tensor2> qkv, q, k, v, o;
  size_t qo = 0, ko = 0, vo = 0, oo = 0;  // element offsets into the buffers
  AttentionArgs args(const AttnCase& c, bool cpu_side) const {
    AttentionArgs a;
    auto p = [&](const Tensor2& t, size_t off) { return cpu_side ? t.cp(off) : t.gp(off); };
    const Tensor2& tq = c.packed ? *qkv : *q;
    const Tensor2& tk = c.packed ? *qkv : *k;
    const Tensor2& tv = c.packed ? *qkv : *v;
    a.q = p(tq, qo);
    a.k = p(tk, ko);
    a.v = p(tv, vo);
    a.o = cpu_side ? o->cp(oo) : o->gp(oo);
    a.ldq = ldq;
    a.ldk = ldk;
    a.ldv = ldv;
    a.ldo = ldo;
    a.B = c.B;
    a.Lq = c.Lq;
    a.Lk = c.Lk;
    a.heads = c.heads;
    a.head_dim = c.D;
    a.scale = 1.0f / std::sqrt((float)c.D);
    a.causal = c.causal;
    return a;
  }
};

std::unique_ptr<AttnSetup> setup(const AttnCase& c, uint32_t seed) {
  auto s = std::make_unique<AttnSetup>();
  s->width = c.heads * c.D;
  const int off = c.offset;
  if (c.packed) {
    s->ldq = s->ldk = s->ldv = 3 * s->width;
    s->qkv = std::make_unique<Tensor2>((size_t)c.B * c.Lq * s->ldq + off);
    s->qkv->set(randn(s->qkv->n, seed));
    s->qo = off;
    s->ko = off + s->width;
    s->vo = off + 2 * s->width;
  } else {
    s->ldq = s->ldk = s->ldv = s->width;
    s->q = std::make_unique<Tensor2>((size_t)c.B * c.Lq * s->width + off);
    s->k = std::make_unique<Tensor2>((size_t)c.B * c.Lk * s->width + off);
    s->v = std::make_unique<Tensor2>((size_t)c.B * c.Lk * s->width + off);
    s->q->set(randn(s->q->n, seed, c.amp));
    s->k->set(randn(s->k->n, seed + 1));
    s->v->set(randn(s->v->n, seed + 2));
    s->qo = s->ko = s->vo = off;
  }
  s->ldo = s->width;
  s->o = std::make_unique<Tensor2>((size_t)c.B * c.Lq * s->width + off);
  s->o->poison();
  s->oo = off;
  return s;
}

// CPU reference for the chosen rows (into the CPU side of s.o).
void cpu_reference(const AttnCase& c, const AttnSetup& s) {
  const auto rows = ref_rows(c);
  for (int b = 0; b < c.B; ++b)
    for (auto [r0, nr] : rows) {
      AttentionArgs a = s.args(c, true);
      const size_t elem = dtype_size(cpu().act_dtype());
      auto shift = [&](const void* p, size_t n) { return (const void*)((const char*)p + n * elem); };
      a.q = shift(a.q, ((size_t)b * c.Lq + r0) * a.ldq);
      a.k = shift(a.k, (size_t)b * c.Lk * a.ldk);
      a.v = shift(a.v, (size_t)b * c.Lk * a.ldv);
      a.o = (void*)shift(a.o, ((size_t)b * c.Lq + r0) * a.ldo);
      a.B = 1;
      a.Lq = nr;
      if (c.causal) {
        // the causal mask uses absolute row indices: only the full block from row 0 is comparable
        if (r0 != 0) continue;
      }
      cpu().attention(a);
    }
}

// Compares the GPU result with the CPU reference on the reference rows.
void check(const AttnCase& c, const AttnSetup& s, const std::string& suffix = "") {
  const auto rows = ref_rows(c);
  const auto g = s.o->get_g(), r = s.o->get_c();
  std::vector<float> gs, rs;
  for (int b = 0; b < c.B; ++b)
    for (auto [r0, nr] : rows) {
      if (c.causal && r0 != 0) continue;
      for (int i = r0; i < r0 + nr; ++i) {
        const size_t base = s.oo + ((size_t)b * c.Lq + i) * s.ldo;
        gs.insert(gs.end(), g.begin() + base, g.begin() + base + s.width);
        rs.insert(rs.end(), r.begin() + base, r.begin() + base + s.width);
      }
    }
  char label[220];
  std::snprintf(label, sizeof label, "%s B%d Lq%d Lk%d h%d d%d%s", c.name, c.B, c.Lq, c.Lk, c.heads, c.D,
                c.causal ? " causal" : "");
  expect_close(label + suffix, gs, rs, attn_tol(rs));
}

void compare(const AttnCase& c, const AttnSetup& s) {
  cpu_reference(c, s);
  check(c, s, c.D == 160 ? " [d160 v" + std::to_string(cuda::last_attn_d160_variant()) + "]" : "");
}

void run_attn(const AttnCase& c, uint32_t seed) {
  gpu();
  auto s = setup(c, seed);
  gpu().attention(s->args(c, false));
  gpu().synchronize();
  compare(c, *s);
}

// d=160: every variant (tuning.h: v0 legacy 105 KiB, v1 Q aliased 84 KiB, v2 BC 32 aliased 42 KiB) against
// one CPU reference. A variant that does not fit this device's shared memory runs the SIMT kernel instead
// (said in the label); its result must be right too.
void run_attn_d160_variants(const AttnCase& c, uint32_t seed) {
  gpu();
  auto s = setup(c, seed);
  cpu_reference(c, *s);
  const std::vector<float> nan(s->o->n, std::nanf(""));
  ForcedPlanReset reset;
  for (int v = 0; v < cuda::kAttnD160Variants; ++v) {
    gpu().upload_act(s->o->g, nan.data(), s->o->n);
    cuda::set_forced_attn_d160_variant(v);
    gpu().attention(s->args(c, false));
    gpu().synchronize();
    const int used = cuda::last_attn_d160_variant();
    check(c, *s,
          used == v ? " [d160 v" + std::to_string(v) + "]"
                    : " [d160 v" + std::to_string(v) + " does not fit this GPU: SIMT kernel]");
  }
}

}  // namespace

TEST(cuda_op_attention_self_unet_levels) {
  run_attn({"self 64x64 (d40)", 2, 4096, 4096, 8, 40, false, true, 0, 64}, 300);
  run_attn({"self 32x32 (d80)", 2, 1024, 1024, 8, 80, false, true, 0, 64}, 301);
  run_attn({"self 16x16 (d160)", 2, 256, 256, 8, 160, false, true}, 302);
  run_attn({"self mid 8x8 (d160)", 2, 64, 64, 8, 160, false, true}, 303);
  run_attn({"self odd 65x47 (d40)", 2, 3055, 3055, 8, 40, false, false, 0, 64}, 304);
}

TEST(cuda_op_attention_cross_text_and_sfa) {
  run_attn({"text cross (d40)", 2, 4096, 77, 8, 40, false, false, 0, 64}, 310);
  run_attn({"text cross (d80)", 2, 1024, 77, 8, 80}, 311);
  run_attn({"text cross (d160)", 2, 256, 77, 8, 160}, 312);
  run_attn({"text cross odd (d160)", 2, 33 * 24 / 4 + 1, 77, 8, 160}, 313);
  run_attn({"SFA connect spatial 4096x4096 (d40)", 2, 4096, 4096, 8, 40, false, false, 0, 64}, 314);
  run_attn({"pixel attn 1024x1024 (d80)", 2, 1024, 1024, 8, 80, false, false, 0, 64}, 315);
}

TEST(cuda_op_attention_clip_tiny_and_generic) {
  run_attn({"CLIP causal (d64)", 2, 77, 77, 12, 64, true, true}, 320);
  run_attn({"tiny UNet 9x9 (d16)", 2, 81, 81, 2, 16}, 321);
  run_attn({"tiny UNet cross (d32)", 2, 25, 77, 2, 32}, 322);
  run_attn({"tiny CLIP causal (d8)", 2, 77, 77, 4, 8, true, true}, 323);
  run_attn({"VAE mid single head (generic d512)", 1, 1024, 1024, 1, 512, false, true, 0, 32}, 324);
  run_attn({"generic d24", 2, 100, 77, 3, 24}, 325);
  run_attn({"unaligned slice (generic d40)", 2, 300, 77, 8, 40, false, false, 1}, 326);
  run_attn({"generic causal d48", 1, 77, 77, 2, 48, true}, 327);
}

TEST(cuda_op_attention_multi_problem_launch) {
  gpu();
  // SFA: the high- and low-level branches are independent problems of the same shape -> one launch
  AttnCase hi{"SFA hi", 2, 1024, 77, 8, 80}, lo{"SFA lo", 2, 1024, 77, 8, 80};
  AttnCase sp{"SFA spatial", 2, 1024, 1024, 8, 80, false, false, 0, 64};
  auto s1 = setup(hi, 330), s2 = setup(lo, 331), s3 = setup(sp, 332);
  AttentionArgs probs[3] = {s1->args(hi, false), s2->args(lo, false), s3->args(sp, false)};
  attention_multi(gpu(), probs, 3);
  gpu().synchronize();
  compare(hi, *s1);
  compare(lo, *s2);
  compare(sp, *s3);
}

// Review additions: key counts around the key-tile size (BC = 64 for d <= 48 and d = 160, 32 for d 64/80),
// Lk = 1, Lq = 1, causal masks on the d40 (k16 + k8 steps), d80 and d160 kernels with odd lengths, and
// peaky softmaxes (scores with sd 8) where the running max changes between key tiles.
TEST(cuda_op_attention_tile_edges) {
  run_attn({"Lk=1 (d40)", 2, 37, 1, 8, 40}, 350);
  run_attn({"Lk=5 < tile (d80)", 2, 130, 5, 8, 80}, 351);
  run_attn({"Lk=33 = BC+1 (d80)", 2, 129, 33, 8, 80}, 352);
  run_attn({"Lk=65 = BC+1 packed (d160)", 1, 65, 65, 8, 160, false, true}, 353);
  run_attn({"Lq=1 vs 4096 keys (d40)", 2, 1, 4096, 8, 40}, 354);
  run_attn({"causal packed odd 200 (d40)", 2, 200, 200, 8, 40, true, true}, 355);
  run_attn({"causal odd 150 (d80)", 1, 150, 150, 4, 80, true}, 356);
  run_attn({"causal packed odd 131 (d160)", 1, 131, 131, 2, 160, true, true}, 357);
  run_attn({"causal 300 (d32)", 1, 300, 300, 2, 32, true, true}, 358);
  run_attn({"peaky softmax 1000x1000 (d40)", 2, 1000, 1000, 8, 40, false, true, 0, 0, 8.0f}, 359);
  run_attn({"peaky softmax cross 77 (d80)", 2, 300, 77, 8, 80, false, false, 0, 0, 8.0f}, 360);
  run_attn({"peaky causal (d64)", 2, 77, 77, 12, 64, true, true, 0, 0, 8.0f}, 361);
  run_attn({"peaky generic d512", 1, 200, 200, 1, 512, false, false, 0, 0, 8.0f}, 362);
}

// Backend::attention_batched (task: SFA): one query length, two different K/V contexts - the 77-token
// high-level context and the 4096-token low-level one - in ONE launch on CUDA, compared to two single
// attention() calls on the CPU backend. Then the same inside execute() (eager, captured graph, replay),
// a heterogeneous list (different head dims and causal flags: the per-problem fallback) and 5 problems
// (more than kMaxAttnProblems = 4 per launch).
TEST(cuda_op_attention_batched_sfa) {
  Backend& g = gpu();
  {
    AttnCase hi{"SFA batched: ctx 77 (d40)", 2, 4096, 77, 8, 40, false, false, 0, 64};
    AttnCase lo{"SFA batched: ctx 4096 (d40)", 2, 4096, 4096, 8, 40, false, false, 0, 64};
    auto s1 = setup(hi, 340), s2 = setup(lo, 341);
    AttentionArgs probs[2] = {s1->args(hi, false), s2->args(lo, false)};
    g.attention_batched(probs, 2);
    g.synchronize();
    compare(hi, *s1);
    compare(lo, *s2);
  }
  {
    AttnCase hi{"SFA batched in a graph: ctx 77 (d80)", 2, 1024, 77, 8, 80};
    AttnCase lo{"SFA batched in a graph: ctx 1024 (d80)", 2, 1024, 1024, 8, 80, false, false, 0, 64};
    auto s1 = setup(hi, 342), s2 = setup(lo, 343);
    AttentionArgs probs[2] = {s1->args(hi, false), s2->args(lo, false)};
    const int tag = 0;
    const auto before = cuda_backend_stats(g);
    for (int call = 0; call < 3; ++call) {  // eager, capture + launch, replay
      s1->o->poison();
      s2->o->poison();
      g.execute(&tag, [&] { g.attention_batched(probs, 2); });
      compare(hi, *s1);
      compare(lo, *s2);
    }
    const auto after = cuda_backend_stats(g);
    g.forget_plan(&tag);
    CHECK_MSG(after.graph_fallbacks == before.graph_fallbacks, "capture fell back: " + after.last_graph_failure);
  }
  {
    AttnCase c[5] = {{"hetero d40", 2, 300, 77, 8, 40},
                     {"hetero d80", 2, 300, 77, 8, 80},
                     {"hetero d40 causal", 1, 77, 77, 8, 40, true, true},
                     {"hetero generic d24", 1, 50, 33, 2, 24},
                     {"hetero d40 unaligned", 1, 50, 33, 8, 40, false, false, 1}};
    std::vector<std::unique_ptr<AttnSetup>> st;
    std::vector<AttentionArgs> probs;
    for (int i = 0; i < 5; ++i) st.push_back(setup(c[i], 344 + i)), probs.push_back(st[i]->args(c[i], false));
    g.attention_batched(probs.data(), 5);
    g.synchronize();
    for (int i = 0; i < 5; ++i) compare(c[i], *st[i]);
  }
  {
    std::vector<AttnCase> c;
    for (int i = 0; i < 5; ++i)
      c.push_back({"5 problems one head dim (d40)", 1 + i % 2, 100 + 37 * i, 20 + 50 * i, 8, 40});
    std::vector<std::unique_ptr<AttnSetup>> st;
    std::vector<AttentionArgs> probs;
    for (int i = 0; i < 5; ++i) st.push_back(setup(c[i], 350 + i)), probs.push_back(st[i]->args(c[i], false));
    g.attention_batched(probs.data(), 5);
    g.synchronize();
    for (int i = 0; i < 5; ++i) compare(c[i], *st[i]);
  }
}

// Small shapes of every attention kernel (all tensor-core head dims, causal, generic), sized for
// compute-sanitizer (memcheck / racecheck) runs: scripts/gpu-check.sh runs every "cuda_op_small_" test under
// it. d=160 runs each of its three variants (the aliased ones' extra barrier is what racecheck must clear).
TEST(cuda_op_small_attention_all_dims) {
  int seed = 370;
  for (int d : {8, 16, 32, 40, 64, 80, 160}) {
    run_attn({"small", 1, 70, 70, 2, d, false, true}, seed++);
    run_attn({"small causal", 1, 70, 70, 2, d, true, true}, seed++);
    run_attn({"small cross", 2, 33, 77, 2, d}, seed++);
  }
  run_attn({"small generic d24", 1, 40, 70, 2, 24}, seed++);
  run_attn({"small generic d512", 1, 40, 40, 1, 512}, seed++);
  run_attn({"small generic unaligned d40 causal", 1, 40, 40, 2, 40, true, false, 1}, seed++);
  run_attn_d160_variants({"small d160 variants", 1, 70, 70, 2, 160, false, true}, seed++);
  run_attn_d160_variants({"small d160 variants causal", 1, 70, 70, 2, 160, true, true}, seed++);
  run_attn_d160_variants({"small d160 variants cross Lk=33", 2, 33, 33, 2, 160}, seed++);
}

// Every d=160 variant on the real shapes (16x16 level: 256 tokens; mid block: 64; text cross-attention 77;
// odd latents) and the key-tile edges of both BC (32: Lk 33, 64: Lk 65), causal, Lq = 1, peaky scores.
TEST(cuda_op_tiles_attention_d160_variants) {
  run_attn_d160_variants({"d160 self 16x16", 2, 256, 256, 8, 160, false, true}, 390);
  run_attn_d160_variants({"d160 self mid 8x8", 2, 64, 64, 8, 160, false, true}, 391);
  run_attn_d160_variants({"d160 text cross", 2, 256, 77, 8, 160}, 392);
  run_attn_d160_variants({"d160 text cross odd", 2, 199, 77, 8, 160}, 393);
  run_attn_d160_variants({"d160 Lk=33", 2, 129, 33, 8, 160}, 394);
  run_attn_d160_variants({"d160 Lk=65 packed", 1, 65, 65, 8, 160, false, true}, 395);
  run_attn_d160_variants({"d160 causal packed odd 131", 1, 131, 131, 2, 160, true, true}, 396);
  run_attn_d160_variants({"d160 Lq=1 vs 300 keys", 2, 1, 300, 8, 160}, 397);
  run_attn_d160_variants({"d160 peaky softmax", 2, 256, 256, 8, 160, false, false, 0, 0, 8.0f}, 398);
}
