#!/usr/bin/env python3
"""PyTorch baseline for xpsr_cuda_bench (scripts/gpu-check.sh runs it; scripts/gpu_report.py compares).

  bench_torch_ops.py --cases ours.json --out torch.json
      Times every case listed in ours.json (written by xpsr_cuda_bench) with PyTorch on the same GPU:
      conv2d through cuDNN (channels_last fp16, cudnn.benchmark), linear through cuBLAS (fp16),
      attention through F.scaled_dot_product_attention (best of the flash / efficient / cuDNN backends),
      group_norm (+SiLU), layer_norm, GEGLU and add. Same method as ours: R back-to-back launches captured
      in one CUDA graph, median of 15 replays, ms per op (eager CUDA-event timing if capture fails).
      Also measures the two ceilings the floors use ("ceilings"): a cuBLAS 8192^3 fp16 matmul on random
      data (TFLOP/s) and a device-to-device copy (GB/s, bytes read + written).
"""
import argparse
import json
import math
import statistics
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_op(torch, F, case):
    kind, p = case["kind"], case["params"]
    dev, h = "cuda", torch.float16
    g = torch.Generator(device=dev).manual_seed(0)

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, device=dev, generator=g, dtype=torch.float32) * scale).to(h)

    if kind == "conv2d":
        N, C, K, H, W = (int(p[k]) for k in ("N", "C", "K", "H", "W"))
        x = rn(N, C, H, W).to(memory_format=torch.channels_last)
        w = rn(K, C, int(p["R"]), int(p["S"]), scale=0.02).to(memory_format=torch.channels_last)
        b = rn(K, scale=0.1)
        st, pad = int(p["stride"]), int(p["pad"])
        return {"cudnn channels_last": lambda: F.conv2d(x, w, b, stride=st, padding=pad)}
    if kind == "linear":
        M, K, N = (int(p[k]) for k in ("M", "K", "N"))
        x, w, b = rn(M, K), rn(N, K, scale=0.03), rn(N, scale=0.1)
        return {"cublas": lambda: F.linear(x, w, b)}
    if kind == "attention":
        B, Lq, Lk, H, d = (int(p[k]) for k in ("B", "Lq", "Lk", "heads", "d"))
        q = rn(B, Lq, H, d).transpose(1, 2)
        k = rn(B, Lk, H, d).transpose(1, 2)
        v = rn(B, Lk, H, d).transpose(1, 2)
        sc = 1.0 / math.sqrt(d)
        variants = {}
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
            for label, attr in names.items():
                be = getattr(SDPBackend, attr, None)
                if be is None:
                    continue

                def fn(be=be):
                    with sdpa_kernel(be):
                        return F.scaled_dot_product_attention(q, k, v, scale=sc)
                variants["sdpa " + label] = fn
        except ImportError:
            pass
        variants["sdpa default"] = lambda: F.scaled_dot_product_attention(q, k, v, scale=sc)
        return variants
    if kind == "group_norm":
        N, HW, C, G = (int(p[k]) for k in ("N", "HW", "C", "groups"))
        side = int(math.isqrt(HW))
        Hh, Ww = (side, HW // side) if side * (HW // side) == HW else (HW, 1)
        x = rn(N, C, Hh, Ww)
        xc = x.to(memory_format=torch.channels_last)
        gm, bt = rn(C, scale=1.0), rn(C, scale=0.1)
        silu = int(p.get("silu", 0))
        f = (lambda t: F.silu(F.group_norm(t, G, gm, bt, 1e-5))) if silu else (lambda t: F.group_norm(t, G, gm, bt, 1e-5))
        return {"NCHW": lambda: f(x), "channels_last": lambda: f(xc)}
    if kind == "layer_norm":
        R, C = int(p["rows"]), int(p["C"])
        x, gm, bt = rn(R, C), rn(C), rn(C, scale=0.1)
        return {"native": lambda: F.layer_norm(x, (C,), gm, bt, 1e-5)}
    if kind == "geglu":
        R, I = int(p["rows"]), int(p["inner"])
        x = rn(R, 2 * I)

        def geglu():
            a, gate = x.chunk(2, dim=-1)
            return a * F.gelu(gate)
        return {"eager (2 kernels)": geglu}
    if kind == "add":
        n = int(p["n"])
        a, b = rn(n), rn(n)
        return {"native": lambda: a + b}
    return {}


def time_fn(torch, fn, reps):
    # warm-up on a side stream (required before graph capture; also runs cuDNN autotuning)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            graph.replay()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        del graph
        return statistics.median(ts) / reps * 1e3, "graph"
    except Exception as e:  # noqa: BLE001 - fall back to eager event timing
        log("  graph capture failed (%s), timing eagerly" % e)
        torch.cuda.synchronize()
        ts = []
        for _ in range(15):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(reps):
                fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / reps)
        return statistics.median(ts), "eager-events"


def measure_ceilings(torch):
    """cuBLAS fp16 8192^3 on random data (TFLOP/s) and a 512 MiB device copy (GB/s): medians of 10 / 7."""
    out = {}
    try:
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.float16)
        b = torch.randn(n, n, device="cuda", dtype=torch.float16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        ts = []
        for _ in range(10):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            a @ b
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        out["tensor_tflops"] = 2.0 * n ** 3 / (statistics.median(ts) * 1e-3) / 1e12
        del a, b
        x = torch.empty(512 << 20, dtype=torch.uint8, device="cuda").fill_(1)
        y = torch.empty_like(x)
        y.copy_(x)
        torch.cuda.synchronize()
        ts = []
        for _ in range(7):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            y.copy_(x)
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        out["copy_gbps"] = 2.0 * x.numel() / (statistics.median(ts) * 1e-3) / 1e9
        del x, y
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        out["error"] = str(e)[:200]
    log("ceilings: %s" % out)
    return out


def run_bench(args):
    with open(args.cases) as f:
        ours = json.load(f)
    out = {"backend": "pytorch", "cases": []}
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        out["error"] = "cannot import torch: %s" % e
        json.dump(out, open(args.out, "w"), indent=1)
        log(out["error"])
        return 2
    if not torch.cuda.is_available():
        out["error"] = "torch has no CUDA device"
        json.dump(out, open(args.out, "w"), indent=1)
        log(out["error"])
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
    out["device"] = torch.cuda.get_device_name(0)
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version()
    out["method"] = "median of 15 graph replays of R back-to-back launches, ms per op (best variant)"
    out["ceilings"] = measure_ceilings(torch)
    torch.cuda.reset_peak_memory_stats()
    for case in ours.get("cases", []):
        rec = {"name": case["name"], "kind": case["kind"], "variants": {}}
        try:
            variants = build_op(torch, F, case)
            reps = max(5, min(200, int(case.get("reps") or 20)))
            for label, fn in variants.items():
                try:
                    ms, method = time_fn(torch, fn, reps)
                    rec["variants"][label] = {"ms": ms, "method": method}
                except Exception as e:  # noqa: BLE001 - e.g. a SDPA backend that does not support d=40
                    rec["variants"][label] = {"error": str(e).splitlines()[0][:200]}
            ok = {k: v for k, v in rec["variants"].items() if "ms" in v}
            if ok:
                best = min(ok, key=lambda k: ok[k]["ms"])
                rec["ms"], rec["best"] = ok[best]["ms"], best
            else:
                rec["error"] = "no variant ran"
        except Exception as e:  # noqa: BLE001
            rec["error"] = str(e)[:300]
        log("%-44s %10s  %s" % (rec["name"], "%.4f" % rec["ms"] if "ms" in rec else "-", rec.get("best", rec.get("error", ""))))
        out["cases"].append(rec)
        torch.cuda.empty_cache()
    out["memory"] = {"max_allocated_bytes": torch.cuda.max_memory_allocated()}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help="xpsr_cuda_bench JSON whose cases to time")
    ap.add_argument("--out", default="torch.json")
    args = ap.parse_args()
    if not args.cases:
        ap.error("--cases is required")
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
