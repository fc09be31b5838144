#!/usr/bin/env python3
"""Report generator of scripts/gpu-check.sh (no GPU needed: it only reads the stage logs and JSON files).

  gpu_report.py WORK REPORT [ELAPSED BUDGET GIT]
      WORK   the stage logs gpu-check wrote (stages.tsv, env.log, tests_ops.log, tests_networks.log, ...)
      REPORT the report folder (bench_ours.json, bench_torch.json, bench_full.json written by the benchmarks;
             report.md and summary.json are (re)written here)
  gpu_report.py --self-test DIR
      Writes canned stage logs and benchmark files (a run with a failing test, a test whose error lines come
      before its status line, a crash, both tile policies, a torch baseline, a sanitizer hit) under DIR, builds
      the report from them and checks it. Exit 0 when every check holds. test/gpu-check.test.mjs runs it.

report.md answers, in this order: the verdict (tests, sanitizer, 20-step 512x512 time, peak device memory,
graph fallbacks, ours vs PyTorch), the environment checks, the stages, every CUDA op test with each case's
max_abs / max_rel / share of tolerance used, the full networks and parity, per-op time against PyTorch
(cuBLAS / cuDNN / SDPA / group_norm), against the legacy tile policy and against the op's floor, the full
network benchmark, kernel resources (ptxas) and compute-sanitizer.
"""
import json
import math
import os
import re
import sys

STATUS_RE = re.compile(r"^(PASS|FAIL|SKIP) (\S+) \((\d+) ms\)$")
CASE_RE = re.compile(
    r"^\s+(?P<case>.*): n (?P<n>\d+), rms\(ref\) (?P<rms>\S+), max_abs (?P<abs>\S+), max_rel (?P<rel>\S+), "
    r"tol used (?P<used>[0-9.]+|inf|nan)% \(rtol (?P<rtol>\S+), atol (?P<atol>\S+)\)")
NET_RE = re.compile(r"^\s+(?P<case>.*?)\s+rel_rms (?P<rel_rms>\S+) \(tol (?P<tol>\S+)\)\s+max_abs (?P<abs>\S+) \(tol (?P<abs_tol>\S+)\)")
SUMMARY_RE = re.compile(r"^native: (\d+) passed, (\d+) failed, (\d+) skipped")


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def parse_tests(text):
    """Parses xpsr_tests output. A test prints its own lines (case errors) BEFORE its status line; a FAIL or
    SKIP status line is followed by exactly one indented message line (plus unindented continuation lines
    if the message had newlines). Lines after the last status line belong to a test that never reported
    (the runner crashed or timed out during it)."""
    tests, pending, summary, unreported = [], [], None, []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        m = STATUS_RE.match(ln)
        if m:
            t = {"status": m.group(1), "name": m.group(2), "ms": int(m.group(3)), "output": pending, "message": None}
            pending = []
            if t["status"] in ("FAIL", "SKIP") and i + 1 < len(lines) and lines[i + 1].startswith("    "):
                msg = [lines[i + 1].strip()]
                i += 1
                while i + 1 < len(lines) and lines[i + 1] and not lines[i + 1].startswith((" ", "PASS ", "FAIL ", "SKIP ", "native: ", "###", "==")):
                    msg.append(lines[i + 1])
                    i += 1
                t["message"] = "\n".join(msg)
            tests.append(t)
        elif SUMMARY_RE.match(ln):  # several runs (e.g. networks + parity): add them up
            m2 = SUMMARY_RE.match(ln)
            if summary:
                p0 = [int(x) for x in SUMMARY_RE.match(summary).groups()]
                cnt = [p0[k] + int(m2.group(k + 1)) for k in range(3)]
                summary = "native: %d passed, %d failed, %d skipped" % tuple(cnt)
            else:
                summary = "native: %s passed, %s failed, %s skipped" % m2.groups()
        elif ln.startswith("### "):  # gpu-check's one-process-per-test reruns: "### name"
            unreported += [x for x in pending if x.strip()]
            pending = []
        else:
            pending.append(ln)
        i += 1
    for t in tests:
        t["cases"] = []
        t["nets"] = []
        for ln in t["output"]:
            c = CASE_RE.match(ln)
            if c:
                t["cases"].append({"case": c.group("case"), "n": int(c.group("n")), "rms_ref": num(c.group("rms")),
                                   "max_abs": num(c.group("abs")), "max_rel": num(c.group("rel")),
                                   "tol_used_pct": math.inf if c.group("used") in ("inf", "nan") else float(c.group("used")),
                                   "rtol": num(c.group("rtol")), "atol": num(c.group("atol"))})
                continue
            nm = NET_RE.match(ln)
            if nm:
                t["nets"].append({"case": nm.group("case").strip(), "rel_rms": num(nm.group("rel_rms")),
                                  "rel_rms_tol": num(nm.group("tol")), "max_abs": num(nm.group("abs")),
                                  "max_abs_tol": num(nm.group("abs_tol"))})
    unreported += [ln for ln in pending if ln.strip() and not SUMMARY_RE.match(ln)]
    return {"summary": summary, "tests": tests, "unreported_output": unreported}


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def short_kernel(name):
    """'gemm_kernel<128, 256, 2, 4, RowsVec>' from the demangled signature (as lib/cuda-resources.ts)."""
    modes = ["RowsVec", "RowsScalar", "ConvVec", "ConvScalar"]
    n = re.sub(r"^void ", "", name)
    n = re.sub(r"xpsr::cuda::(\(anonymous namespace\)::)?", "", n)
    n = re.sub(r"\(AMode\)(\d)", lambda m: modes[int(m.group(1))], n)
    return n.split("(")[0]


def fmt(x, spec="%.3g", dash="-"):
    if x is None:
        return dash
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return spec % x


def geomean(v):
    v = [x for x in v if x and x > 0]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else None


def stages_of(work):
    out = []
    txt = read(os.path.join(work, "stages.tsv")) or ""
    for ln in txt.splitlines():
        f = ln.split("\t")
        if len(f) >= 5:
            out.append({"stage": f[0], "status": f[1], "rc": None if f[2] == "-" else int(f[2]), "seconds": int(f[3]),
                        "limit": int(f[4]), "note": f[5] if len(f) > 5 else ""})
    return out


def env_checks(work):
    """env.tsv lines: item <TAB> found <TAB> required <TAB> ok|FAIL|warn <TAB> note"""
    out = []
    for ln in (read(os.path.join(work, "env.tsv")) or "").splitlines():
        f = ln.split("\t")
        if len(f) >= 4:
            out.append({"item": f[0], "found": f[1], "required": f[2], "verdict": f[3], "note": f[4] if len(f) > 4 else ""})
    return out


def ceilings(ours, torch):
    """Peak tensor rate (TFLOP/s) and memory bandwidth (GB/s) for the floors: measured by the torch baseline
    (cuBLAS 8192^3 fp16, device-to-device copy) when present, else ours (datasheet rate, measured copy)."""
    tc, bw, src = None, None, []
    tc_meas = ((torch or {}).get("ceilings") or {}).get("tensor_tflops")
    bw_meas = ((torch or {}).get("ceilings") or {}).get("copy_gbps")
    peaks = (ours or {}).get("peaks") or {}
    if tc_meas:
        tc, src = tc_meas, src + ["tensor %.0f TFLOP/s measured (cuBLAS 8192^3 fp16)" % tc_meas]
    elif peaks.get("tensor_tflops"):
        tc, src = peaks["tensor_tflops"], src + ["tensor %.0f TFLOP/s (%s)" % (peaks["tensor_tflops"], peaks.get("tensor_source", "datasheet"))]
    if peaks.get("copy_gbps"):
        bw, src = peaks["copy_gbps"], src + ["memory %.0f GB/s measured (device copy, ours)" % peaks["copy_gbps"]]
    elif bw_meas:
        bw, src = bw_meas, src + ["memory %.0f GB/s measured (torch copy)" % bw_meas]
    return tc, bw, "; ".join(src)


def compare_rows(ours, torch):
    tc, bw, _ = ceilings(ours, torch)
    by_name = {c["name"]: c for c in (torch or {}).get("cases", [])}
    rows = []
    for c in (ours or {}).get("cases", []):
        t = by_name.get(c["name"], {})
        o = c.get("ms") if (c.get("ms") or -1) > 0 else None
        lg = c.get("ms_legacy") if (c.get("ms_legacy") or -1) > 0 else None
        tm = t.get("ms")
        floor = None
        if tc or bw:
            f1 = c.get("flops", 0) / (tc * 1e9) if tc and c.get("flops") else 0.0
            f2 = c.get("bytes", 0) / (bw * 1e6) if bw and c.get("bytes") else 0.0
            floor = max(f1, f2) or None
        rows.append({"name": c["name"], "kind": c.get("kind"), "ours_ms": o, "plan": c.get("plan"),
                     "legacy_ms": lg, "legacy_plan": c.get("plan_legacy"), "torch_ms": tm, "torch_variant": t.get("best"),
                     "ratio_torch": o / tm if o and tm else None, "ratio_legacy": o / lg if o and lg else None,
                     "floor_ms": floor, "floor_fraction": floor / o if floor and o else None,
                     "bound": ("memory" if (c.get("bytes", 0) / (bw * 1e6) if bw else 0) >= (c.get("flops", 0) / (tc * 1e9) if tc else 0) else "compute") if (tc and bw) else None,
                     "error": c.get("error") or t.get("error")})
    return rows


def write_report(work, report, elapsed="?", budget="?", git="?"):
    stages = stages_of(work)
    st = {s["stage"]: s for s in stages}
    env = env_checks(work)
    # the first run, then the tests it did not report (tests_rest: one process each, after a crash/timeout)
    ops_txt = (read(os.path.join(work, "tests_ops.log")) or "") + "\n" + (read(os.path.join(work, "tests_rest.log")) or "")
    iso_txt = read(os.path.join(work, "tests_isolated.log")) or ""
    net_txt = read(os.path.join(work, "tests_networks.log")) or ""
    ops = parse_tests(ops_txt)
    iso = parse_tests(iso_txt)
    nets = parse_tests(net_txt)
    ours = load_json(os.path.join(report, "bench_ours.json"))
    torch = load_json(os.path.join(report, "bench_torch.json"))
    full = load_json(os.path.join(report, "bench_full.json"))
    res = load_json(os.path.join(work, "cuda-resources.json"))
    rows = compare_rows(ours, torch) if ours else []
    tc, bw, ceil_src = ceilings(ours, torch)
    L = []
    w = L.append
    w("# xpsr gpu-check report")
    w("")
    w("elapsed %s s of a %s s budget; git %s" % (elapsed, budget, git))
    w("")

    # ---- verdict
    w("## Verdict")
    w("")
    def stage_word(n):
        s = st.get(n)
        return "%s (%s s)" % (s["status"], s["seconds"]) if s else "not run"
    failed_ops = [t["name"] for t in ops["tests"] if t["status"] == "FAIL"]
    iso_pass = {t["name"] for t in iso["tests"] if t["status"] == "PASS"}
    if st.get("env", {}).get("status") == "failed":
        w("- **CANNOT RUN: %s** (environment checks below)" % (st["env"]["note"] or "see the environment checks"))
    if "build" in st:
        w("- build: %s" % stage_word("build"))
    elif "prebuilt" in st:
        w("- build: prebuilt binaries, %s" % stage_word("prebuilt"))
    else:
        w("- build: not run")
    w("- CUDA op tests: %s%s" % (ops["summary"] or "no summary line (%s)" % stage_word("tests_ops"),
                                  ("; FAILED: " + ", ".join(failed_ops)) if failed_ops else ""))
    if iso["tests"]:
        w("- isolated reruns (XPSR_CUDA_SYNC=1, one process each): " + ", ".join("%s %s" % (t["name"], t["status"]) for t in iso["tests"])
          + ("  <- passing alone: a fault in an earlier test poisoned the context" if iso_pass & set(failed_ops) else ""))
    if ops["unreported_output"]:
        w("- the op-test runner stopped during an unreported test (crash or timeout); its last lines are under CUDA op tests")
    skipped = [t for t in ops["tests"] if t["status"] == "SKIP"]
    if skipped:
        w("- **%d CUDA op tests skipped**: %s" % (len(skipped), skipped[0]["message"] or "?"))
    w("- full networks + parity: %s" % (nets["summary"] or "no summary line (%s)" % stage_word("tests_networks")))
    for t in ("memcheck", "racecheck"):
        if t in st:
            errs = re.findall(r"ERROR SUMMARY: (\d+) error", read(os.path.join(work, t + ".log")) or "")
            w("- compute-sanitizer %s: %s%s" % (t, stage_word(t), (", %s errors" % errs[-1]) if errs else ""))
    comps = (full or {}).get("components", {})
    loop = next((v for k, v in comps.items() if k.startswith("denoise_loop_")), None)
    step = next((v for k, v in comps.items() if k.startswith("cfg_step_")), None)
    cuda_full = (full or {}).get("cuda") or {}
    w("- 20-step 512x512 denoising loop: %s" % (("%.1f ms (one CFG step %.2f ms)" % (loop["ms"], step["ms"] if step else float("nan"))) if loop else "not measured (%s)" % stage_word("bench_full")))
    if cuda_full.get("launches_per_step") is not None:
        w("- kernel launches per CFG step: %s" % cuda_full["launches_per_step"])
    mem = cuda_full.get("device_used_peak_bytes") or ((ours or {}).get("memory") or {}).get("device_used_peak_bytes")
    w("- peak device memory: %s" % ("%.2f GiB (full network)" % (cuda_full["device_used_peak_bytes"] / 2**30) if cuda_full.get("device_used_peak_bytes")
                                    else ("%.2f GiB (op benchmark)" % (mem / 2**30) if mem else "not measured")))
    gf = [x for x in [(ours or {}).get("graph_fallbacks"), cuda_full.get("graph_fallbacks")] if x is not None]
    w("- CUDA graph fallbacks: %s" % (("op bench %s, full network %s" % ((ours or {}).get("graph_fallbacks", "-"), cuda_full.get("graph_fallbacks", "-")))
                                      if gf else "not measured") + (("; last failure: " + cuda_full["last_graph_failure"]) if cuda_full.get("last_graph_failure") else ""))
    if rows:
        g_t = geomean([r["ratio_torch"] for r in rows])
        g_l = geomean([r["ratio_legacy"] for r in rows])
        w("- ours / PyTorch, geometric mean over %d ops: %s; model / legacy tile policy: %s" % (
            sum(1 for r in rows if r["ratio_torch"]), fmt(g_t, "%.2f"), fmt(g_l, "%.2f")))
    w("")

    # ---- environment
    w("## Environment checks")
    w("")
    if env:
        w("| item | found | required | verdict | note |")
        w("|---|---|---|---|---|")
        for e in env:
            w("| %s | %s | %s | %s | %s |" % (e["item"], e["found"], e["required"], e["verdict"], e["note"]))
    else:
        w("(no env checks recorded)")
    w("")
    w("## Stages")
    w("")
    w("| stage | status | rc | seconds | limit | note |")
    w("|---|---|---:|---:|---:|---|")
    for s in stages:
        w("| %s | %s | %s | %s | %s | %s |" % (s["stage"], s["status"], "-" if s["rc"] is None else s["rc"], s["seconds"], s["limit"], s["note"]))
    w("")

    # ---- op tests
    w("## CUDA op tests")
    w("")
    if ops["tests"]:
        w("| test | status | ms | cases | worst tol used | message |")
        w("|---|---|---:|---:|---:|---|")
        for t in ops["tests"]:
            worst = max((c["tol_used_pct"] for c in t["cases"]), default=None)
            w("| %s | %s | %d | %d | %s | %s |" % (t["name"], t["status"], t["ms"], len(t["cases"]),
                                                 (fmt(worst, "%.1f") + "%") if worst is not None else "-",
                                                 (t["message"] or "").replace("|", "/").replace("\n", " ")[:200]))
        w("")
        allc = [(t["name"], c) for t in ops["tests"] for c in t["cases"]]
        if allc:
            w("### Closest to tolerance")
            w("")
            w("| test | case | max_abs | max_rel | tol used |")
            w("|---|---|---:|---:|---:|")
            for name, c in sorted(allc, key=lambda x: -x[1]["tol_used_pct"])[:15]:
                w("| %s | %s | %s | %s | %s%% |" % (name, c["case"], fmt(c["max_abs"]), fmt(c["max_rel"]), fmt(c["tol_used_pct"], "%.1f")))
            w("")
            w("### Every case")
            w("")
            w("| test | case | n | max_abs | max_rel | tol used |")
            w("|---|---|---:|---:|---:|---:|")
            for name, c in allc:
                w("| %s | %s | %d | %s | %s | %s%% |" % (name, c["case"], c["n"], fmt(c["max_abs"]), fmt(c["max_rel"]), fmt(c["tol_used_pct"], "%.1f")))
            w("")
        if ops["unreported_output"]:
            w("### Output after the last reported test (the runner stopped during the next one)")
            w("")
            w("```")
            L.extend(ops["unreported_output"][-30:])
            w("```")
            w("")
    else:
        w("(no test results: %s)" % stage_word("tests_ops"))
        w("")

    # ---- networks
    w("## Full networks (CUDA vs CPU) and fixture parity")
    w("")
    if nets["tests"]:
        w("| test | status | ms | message |")
        w("|---|---|---:|---|")
        for t in nets["tests"]:
            w("| %s | %s | %d | %s |" % (t["name"], t["status"], t["ms"], (t["message"] or "").replace("|", "/").replace("\n", " ")[:200]))
        w("")
        netl = [(t["name"], n) for t in nets["tests"] for n in t["nets"]]
        if netl:
            w("| test | network | rel_rms (tol) | max_abs (tol) |")
            w("|---|---|---:|---:|")
            for name, n in netl:
                w("| %s | %s | %s (%s) | %s (%s) |" % (name, n["case"], fmt(n["rel_rms"]), fmt(n["rel_rms_tol"]), fmt(n["max_abs"]), fmt(n["max_abs_tol"])))
            w("")
        other = [(t["name"], ln.strip()) for t in nets["tests"] for ln in t["output"] if ln.strip() and not NET_RE.match(ln)]
        if other:
            w("```")
            L.extend("%s: %s" % o for o in other[:40])
            w("```")
            w("")
    else:
        w("(no results: %s)" % stage_word("tests_networks"))
        w("")

    # ---- ops vs torch vs floor
    w("## Ops: ours vs PyTorch, vs the legacy tile policy, vs the floor")
    w("")
    if rows:
        w("Device: %s. Floors: %s. ours/torch < 1: ours faster (target <= 1.5); model/legacy < 1: the new tile policy is faster; "
          "%% of floor = floor time / our time (floor = max(FLOPs / tensor peak, bytes / bandwidth))." % ((ours or {}).get("device"), ceil_src or "no ceilings"))
        w("")
        w("| op | ours ms | plan | legacy ms | legacy plan | model/legacy | torch ms | torch variant | ours/torch | floor ms | bound | % of floor |")
        w("|---|---:|---|---:|---|---:|---:|---|---:|---:|---|---:|")
        for r in rows:
            flag = " **" if r["ratio_torch"] and r["ratio_torch"] > 1.5 else ""
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s |" % (
                r["name"], fmt(r["ours_ms"], "%.4f"), r["plan"] or "-", fmt(r["legacy_ms"], "%.4f"), r["legacy_plan"] or "-",
                fmt(r["ratio_legacy"], "%.2f"), fmt(r["torch_ms"], "%.4f"), r["torch_variant"] or (r["error"] or "-"),
                fmt(r["ratio_torch"], "%.2f"), flag, fmt(r["floor_ms"], "%.4f"), r["bound"] or "-",
                (fmt(100 * r["floor_fraction"], "%.0f") + "%") if r["floor_fraction"] else "-"))
        w("")
        kinds = sorted({r["kind"] for r in rows if r["kind"]})
        w("| kind | ours/torch (geomean) | model/legacy (geomean) | % of floor (geomean) |")
        w("|---|---:|---:|---:|")
        for k in kinds:
            rk = [r for r in rows if r["kind"] == k]
            g_f = geomean([r["floor_fraction"] for r in rk])
            w("| %s | %s | %s | %s |" % (k, fmt(geomean([r["ratio_torch"] for r in rk]), "%.2f"),
                                         fmt(geomean([r["ratio_legacy"] for r in rk]), "%.2f"), (fmt(100 * g_f, "%.0f") + "%") if g_f else "-"))
        w("")
        if (torch or {}).get("error"):
            w("PyTorch baseline: %s" % torch["error"])
            w("")
        over = [r["name"] for r in rows if r["ratio_torch"] and r["ratio_torch"] > 1.5]
        if over:
            w("Over 1.5x PyTorch: " + ", ".join(over))
            w("")
        if (ours or {}).get("tile_notes"):
            w("Tile notes: " + ours["tile_notes"])
            w("")
    else:
        w("(no op benchmark: %s%s)" % (stage_word("bench_ours"), (": " + ours["error"]) if (ours or {}).get("error") else ""))
        w("")

    # ---- full network
    w("## Full network (xpsr_bench --device cuda)")
    w("")
    if full:
        w("%s; baseline GEMM %s GFLOP/s" % (full.get("description"), fmt(full.get("baseline_gemm_gflops_per_s"), "%.0f")))
        w("")
        w("| component | ms | first call ms | GFLOP | TFLOP/s |")
        w("|---|---:|---:|---:|---:|")
        for k, v in comps.items():
            w("| %s | %s | %s | %s | %s |" % (k, fmt(v.get("ms"), "%.2f"), fmt(v.get("first_call_ms"), "%.1f"), fmt(v.get("gflop"), "%.0f"),
                                            fmt((v.get("gflops_per_s") or 0) / 1e3, "%.1f")))
        w("")
        if cuda_full:
            w("CUDA: " + ", ".join("%s %s" % (k, v) for k, v in cuda_full.items()))
            w("")
    else:
        w("(not run: %s)" % stage_word("bench_full"))
        w("")

    # ---- resources
    if res:
        hot = sorted([k for k in res.get("kernels", []) if k.get("hot")], key=lambda k: (k["arch"], k.get("family", ""), k["name"]))
        w("## Kernel resources (ptxas, %s)" % res.get("compiler"))
        w("")
        w("%d instantiations, %s; with spills: %s (hot: %s)" % (len(res.get("kernels", [])), ", ".join(res.get("architectures", [])),
                                                           res.get("summary", {}).get("with_spills"), res.get("summary", {}).get("hot_with_spills")))
        w("")
        w("| kernel | arch | regs | spills | smem | CTAs/SM |")
        w("|---|---|---:|---:|---:|---|")
        for k in hot[:90]:
            w("| %s | %s | %s | %s | %s | %s |" % (short_kernel(k["name"]), k["arch"], k["registers"],
                                                  k["spill_stores"] + k["spill_loads"], k["static_smem"] + max(k.get("dynamic_smem", 0), 0),
                                                  " ".join("%s:%s" % kv for kv in k.get("ctas_per_sm", {}).items())))
        w("")

    # ---- sanitizer
    for t in ("memcheck", "racecheck"):
        txt = read(os.path.join(work, t + ".log"))
        if txt is None:
            continue
        w("## compute-sanitizer %s (%s)" % (t, stage_word(t)))
        w("")
        w("```")
        keep = [ln for ln in txt.splitlines() if re.search(r"ERROR SUMMARY|^=+ (Invalid|Race|Error|Warning|Uninitialized)|^native: |^FAIL ", ln)]
        counts = {}
        for ln in keep:
            counts[ln] = counts.get(ln, 0) + 1
        L.extend("%4d %s" % (n, ln[:300]) for ln, n in sorted(counts.items(), key=lambda x: -x[1])[:25])
        w("```")
        w("")

    # ---- tails of failed stages
    for s in stages:
        if s["status"] in ("failed", "timeout"):
            txt = read(os.path.join(work, s["stage"] + ".log")) or ""
            w("## Tail of %s.log (%s)" % (s["stage"], s["status"]))
            w("")
            w("```")
            L.extend(ln[:400] for ln in txt.splitlines()[-40:])
            w("```")
            w("")

    with open(os.path.join(report, "report.md.tmp"), "w") as f:
        f.write("\n".join(L) + "\n")
    os.replace(os.path.join(report, "report.md.tmp"), os.path.join(report, "report.md"))
    summary = {"elapsed_seconds": elapsed, "budget_seconds": budget, "git": git, "stages": stages, "env": env,
               "op_tests": {"summary": ops["summary"], "tests": [{k: t[k] for k in ("status", "name", "ms", "message", "cases")} for t in ops["tests"]],
                            "unreported_output": ops["unreported_output"][-30:]},
               "isolated": [{k: t[k] for k in ("status", "name", "ms", "message")} for t in iso["tests"]],
               "networks": {"summary": nets["summary"], "tests": [{k: t[k] for k in ("status", "name", "ms", "message", "nets")} for t in nets["tests"]]},
               "ops": rows, "ceilings": {"tensor_tflops": tc, "bandwidth_gbps": bw, "source": ceil_src},
               "full_network": full, "ours_memory": (ours or {}).get("memory"), "graph_fallbacks": (ours or {}).get("graph_fallbacks")}
    with open(os.path.join(report, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return summary


# ---------------------------------------------------------------------------------------------------- self-test
CANNED_OPS_LOG = """PASS cuda_op_missing_device_is_device_unavailable (3 ms)
    make_cuda_backend(999): CUDA device 999 does not exist; available: cuda:0 (NVIDIA H200)
    level0 qkv/out 8192x320->320 +bias+residual [policy 128x256/8w(64x64) x1]: n 2621440, rms(ref) 1.41, max_abs 0.00195, max_rel 0.000977, tol used 41.5% (rtol 0.00098, atol 0.000345)
    level1 1024 tok 2048x640->640 [policy 128x128/4w(64x64) x1]: n 1310720, rms(ref) 1.02, max_abs 0.000977, max_rel 0.000488, tol used 12.0% (rtol 0.00098, atol 0.000249)
PASS cuda_op_linear_unet_projections (412 ms)
    3x3 320 64x64 [2,320,64,64]->[2,320,64,64] [policy 128x128/4w(64x64) x2]: n 2621440, rms(ref) 0.58, max_abs 0.0039, max_rel 0.0042, tol used 133.0% (rtol 0.00098, atol 0.000142)
FAIL cuda_op_conv3x3_unet_levels (630 ms)
    native/cuda/cuda_test_util.h:150: 3x3 320 64x64: 17 of 2621440 elements out of tolerance; worst [5] gpu 0.5 vs cpu 0.49
SKIP cuda_op_tiles_attention_d160_variants (0 ms)
    no CUDA device: canned
    group_norm 64x64 320 [2, 4096, 320] g32 +silu [parallel finalize]: n 2621440, rms(ref) 0.61, max_abs 0.00049, max_rel 0.00098, tol used 88.8% (rtol 0.00098, atol 0.000149)
    group_norm 64x64 320 [2, 4096, 320] g32 +silu [legacy finalize]: n 2621440, rms(ref) 0.61, max_abs nan, max_rel 0, tol used inf% (rtol 0.00098, atol 0.000149)
"""
CANNED_NETS_LOG = """    text encoder [2,77,768]      rel_rms 0.00121 (tol 2e-2)  max_abs 0.0132 (tol 0.1)
    vae decode 64x64 -> 512x512  rel_rms 0.00412 (tol 2e-2)  max_abs 0.0421 (tol 0.1)
PASS cuda_full_size_text_encoder_vae (9120 ms)
PASS parity_unet (2210 ms)
native: 2 passed, 0 failed, 0 skipped
SKIP cuda_full_size_cfg_step_and_graph_replay (0 ms)
    no CUDA device: canned
PASS parity_vae_decoder (210 ms)
native: 1 passed, 0 failed, 1 skipped
"""


def self_test(d):
    work, report = os.path.join(d, "work"), os.path.join(d, "report")
    os.makedirs(work, exist_ok=True)
    os.makedirs(report, exist_ok=True)
    files = {
        os.path.join(work, "stages.tsv"): "env\tok\t0\t2\t25\t\nprebuilt\tok\t0\t1\t30\tbinaries from .gpu/bin\ntests_ops\ttimeout\t124\t120\t120\t\n"
                                          "tests_isolated\tok\t0\t9\t45\t\ntests_networks\tok\t0\t40\t90\t\nmemcheck\tfailed\t3\t30\t50\t\n",
        os.path.join(work, "env.tsv"): "CMake\t3.28.3\t>= 3.18\tok\t\nnvcc\t13.0\t>= 12.0\tok\t3-argument cudaGraphInstantiate\n"
                                       "GPU\tNVIDIA H200, cc 9.0, 132 SMs, 143771 MiB\tcc >= 8.0\tok\t\n",
        os.path.join(work, "tests_ops.log"): CANNED_OPS_LOG,
        os.path.join(work, "tests_isolated.log"): "### cuda_op_conv3x3_unet_levels\nPASS cuda_op_conv3x3_unet_levels (700 ms)\nnative: 1 passed, 0 failed, 0 skipped\n",
        os.path.join(work, "tests_networks.log"): CANNED_NETS_LOG,
        os.path.join(work, "memcheck.log"): "========= Invalid __global__ read of size 16 bytes\n========= Invalid __global__ read of size 16 bytes\n========= ERROR SUMMARY: 2 errors\n",
        os.path.join(work, "tests_networks.log.unused"): "",
    }
    for p, txt in files.items():
        with open(p, "w") as f:
            f.write(txt)
    ours = {"device": "NVIDIA H200 (compute 9.0, 132 SMs, 143771.0 MiB)", "peaks": {"tensor_tflops": 989.0, "tensor_source": "datasheet", "copy_gbps": 4300.0},
            "memory": {"device_used_peak_bytes": 3 * 2**30}, "graph_fallbacks": 0, "tile_notes": "tiles: model policy",
            "cases": [{"name": "conv3x3 320->320 64x64 s1", "kind": "conv2d", "flops": 15.1e9, "bytes": 6.0e6, "ms": 0.040, "plan": "128x128/4w(64x64) x2",
                       "ms_legacy": 0.050, "plan_legacy": "128x64/4w(64x32) x1"},
                      {"name": "group_norm+silu 4096x320", "kind": "group_norm", "flops": 0, "bytes": 10.5e6, "ms": 0.010, "ms_legacy": 0.020}]}
    torch = {"device": "NVIDIA H200", "ceilings": {"tensor_tflops": 780.0, "copy_gbps": 4200.0},
             "cases": [{"name": "conv3x3 320->320 64x64 s1", "ms": 0.025, "best": "cudnn channels_last"},
                       {"name": "group_norm+silu 4096x320", "ms": 0.012, "best": "channels_last"}]}
    full = {"description": "NVIDIA H200", "components": {"cfg_step_controlnet_unet_b2_64x64": {"ms": 21.5, "first_call_ms": 900, "gflop": 3534},
                                                        "denoise_loop_20_steps": {"ms": 452.0, "first_call_ms": 452.0, "gflop": 70680}},
            "cuda": {"launches_per_step": 1234, "graph_fallbacks": 0, "device_used_peak_bytes": 5 * 2**30}}
    for n, o in (("bench_ours.json", ours), ("bench_torch.json", torch), ("bench_full.json", full)):
        with open(os.path.join(report, n), "w") as f:
            json.dump(o, f)
    s = write_report(work, report, 123, 450, "abc1234")
    md = read(os.path.join(report, "report.md"))
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)
    t = {x["name"]: x for x in s["op_tests"]["tests"]}
    # the case lines printed BEFORE a status line belong to that test (the old parser gave them to the previous one)
    expect([c["case"].split(" [")[0] for c in t["cuda_op_linear_unet_projections"]["cases"]] ==
           ["level0 qkv/out 8192x320->320 +bias+residual", "level1 1024 tok 2048x640->640"], "linear cases attached to the linear test")
    expect(t["cuda_op_missing_device_is_device_unavailable"]["cases"] == [], "no cases on the first test")
    expect(len(t["cuda_op_conv3x3_unet_levels"]["cases"]) == 1 and t["cuda_op_conv3x3_unet_levels"]["cases"][0]["tol_used_pct"] == 133.0, "conv case with 133%")
    expect("17 of 2621440 elements" in (t["cuda_op_conv3x3_unet_levels"]["message"] or ""), "FAIL message kept")
    expect(t["cuda_op_tiles_attention_d160_variants"]["message"] == "no CUDA device: canned", "SKIP message is one line")
    expect(t["cuda_op_tiles_attention_d160_variants"]["cases"] == [], "SKIP test has no cases")
    expect(len(s["op_tests"]["unreported_output"]) == 2, "two case lines of the test the runner died in")
    expect("inf" in md and "group_norm 64x64 320" in md, "unreported output shown")
    expect("| cuda_op_conv3x3_unet_levels | 3x3 320 64x64" in md, "conv case listed under its test")
    expect("passing alone" in md, "isolated rerun verdict")
    expect("452.0 ms" in md, "20-step time")
    expect("5.00 GiB" in md, "peak memory of the full network")
    expect("op bench 0, full network 0" in md, "graph fallbacks")
    expect("launches per CFG step: 1234" in md, "launches per step")
    rows = {r["name"]: r for r in s["ops"]}
    conv = rows["conv3x3 320->320 64x64 s1"]
    expect(abs(conv["ratio_torch"] - 1.6) < 1e-9, "ours/torch ratio")
    expect(abs(conv["ratio_legacy"] - 0.8) < 1e-9, "model/legacy ratio")
    expect(abs(conv["floor_ms"] - 15.1e9 / 780e12 * 1e3) < 1e-12, "floor from the measured tensor ceiling")
    expect(conv["bound"] == "compute", "conv is compute-bound")
    gn = rows["group_norm+silu 4096x320"]
    expect(abs(gn["floor_ms"] - 10.5e6 / 4300e9 * 1e3) < 1e-12 and gn["bound"] == "memory", "group norm floor from bandwidth")
    expect("ERROR SUMMARY: 2 errors" in md and "memcheck: failed (30 s), 2 errors" in md, "sanitizer errors")
    expect("Over 1.5x PyTorch: conv3x3 320->320 64x64 s1" in md, "ops over 1.5x listed")
    expect("| nvcc | 13.0 | >= 12.0 | ok |" in md, "environment table")
    expect("rel_rms" in md and "text encoder [2,77,768]" in md, "network errors")
    expect(s["networks"]["summary"] == "native: 3 passed, 0 failed, 1 skipped", "two runner summaries added up")
    expect("**1 CUDA op tests skipped**: no CUDA device: canned" in md, "skips flagged in the verdict")
    expect(short_kernel("void xpsr::cuda::gemm_kernel<64, 64, 2, 2, (xpsr::cuda::AMode)3>(xpsr::cuda::GemmKernelParams)")
           == "gemm_kernel<64, 64, 2, 2, ConvScalar>", "kernel names shortened")
    expect(short_kernel("void xpsr::cuda::(anonymous namespace)::gn_partial<8>(__half const*, float*)") == "gn_partial<8>",
           "anonymous namespace dropped")
    for p in problems:
        print("self-test FAILED: " + p)
    if not problems:
        print("self-test: ok (%s)" % os.path.join(report, "report.md"))
    return 1 if problems else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "--self-test":
        d = argv[2] if len(argv) > 2 else "gpu-report-selftest"
        return self_test(d)
    if len(argv) < 3:
        print(__doc__)
        return 2
    work, report = argv[1], argv[2]
    elapsed, budget, git = (argv[3:6] + ["?", "?", "?"])[:3]
    write_report(work, report, elapsed, budget, git)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
