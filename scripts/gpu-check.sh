#!/usr/bin/env bash
# One-shot check for a CUDA host without Node (needs nvcc, CMake; PyTorch with CUDA for the baseline):
#   scripts/gpu-check.sh [REPORT_DIR]        (default ./gpu-report)
# Stages: env -> configure -> build (Release, -j16) -> xpsr_tests (all native tests, incl. the CUDA op tests
# and the parity tests reading test/fixtures) -> xpsr_cuda_bench (our ops) -> bench_torch_ops.py (cuBLAS /
# cuDNN / SDPA on the same GPU) -> xpsr_bench --device cuda (full network, if built) -> comparison table.
# Every stage has its own time limit inside a global budget (XPSR_CHECK_BUDGET, default 470 s so the whole
# run ends within 8 minutes); a failing stage is recorded and later stages still run.
# Output in REPORT_DIR: summary.json (stages, test counts, key numbers), <stage>.log, tests.json,
# bench_ours.json, bench_torch.json, bench_full.json, compare.md, compare.json, env.txt.
# Env: XPSR_BUILD_DIR (default build-gpu), XPSR_CUDA_ARCHS (default: this GPU's compute capability),
#      PYTHON (default python3), XPSR_CHECK_BUDGET.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPORT=${1:-./gpu-report}
mkdir -p "$REPORT" || { echo "cannot create $REPORT" >&2; exit 2; }
REPORT=$(cd "$REPORT" && pwd)
BUILD=${XPSR_BUILD_DIR:-$ROOT/build-gpu}
PY=${PYTHON:-python3}
BUDGET=${XPSR_CHECK_BUDGET:-470}
START=$(date +%s)
STAGES_JSON="$REPORT/.stages"
: > "$STAGES_JSON"

elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME CAP_SECONDS RESERVE_SECONDS COMMAND...
#   runs COMMAND (through bash -c) with timeout min(CAP, budget left - RESERVE), log in REPORT/NAME.log;
#   RESERVE = the least time the later stages need (so a slow build cannot starve the tests entirely)
run_stage() {
  local name=$1 cap=$2 reserve=$3
  shift 3
  local left=$(( BUDGET - $(elapsed) - reserve ))
  local limit=$cap
  (( left < limit )) && limit=$left
  local log="$REPORT/$name.log"
  if (( limit < 5 )); then
    echo "== $name: skipped (time budget spent)" | tee "$log"
    printf '{"stage":"%s","status":"skipped","rc":null,"seconds":0,"limit":%d}\n' "$name" "$limit" >> "$STAGES_JSON"
    return 1
  fi
  echo "== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout -k 10 "$limit" bash -c "$*" > "$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status=ok
  (( rc != 0 )) && status=failed
  (( rc == 124 || rc == 137 )) && status=timeout
  echo "   -> $status (rc $rc, ${dt}s)"
  printf '{"stage":"%s","status":"%s","rc":%d,"seconds":%d,"limit":%d}\n' "$name" "$status" "$rc" "$dt" "$limit" >> "$STAGES_JSON"
  return $rc
}

# ---- env
run_stage env 20 190 "
  echo '# date'; date -u; echo; echo '# nvidia-smi'; nvidia-smi || true; echo
  echo '# nvcc'; nvcc --version || true; echo; echo '# cmake'; cmake --version || true; echo
  echo '# cpu'; nproc; (lscpu | head -20) || true; echo
  echo '# python / torch'; $PY -c 'import torch,sys;print(sys.version);print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' || true
  echo; echo '# git'; (cd '$ROOT' && git rev-parse HEAD && git status --short | head -50) || true
"
cp "$REPORT/env.log" "$REPORT/env.txt" 2>/dev/null

# build for this GPU only (faster) unless XPSR_CUDA_ARCHS is given
ARCHS=${XPSR_CUDA_ARCHS:-}
if [[ -z "$ARCHS" ]]; then
  CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$CC" =~ ^[0-9]+$ ]] && ARCHS="$CC"
fi
ARCH_FLAG=""
[[ -n "$ARCHS" ]] && ARCH_FLAG="-DXPSR_CUDA_ARCHS=$ARCHS"

# ---- configure + build
run_stage configure 60 180 "cmake -S '$ROOT' -B '$BUILD' -DCMAKE_BUILD_TYPE=Release -DXPSR_CUDA_MODE=on $ARCH_FLAG"
run_stage build 240 120 "cmake --build '$BUILD' -j16"

# ---- tests (all native tests; CUDA op tests print max errors and % of tolerance used)
run_stage tests 180 60 "cd '$ROOT' && '$BUILD/xpsr_tests'"
$PY - "$REPORT/tests.log" "$REPORT/tests.json" <<'PYEOF' 2>/dev/null || true
import json, re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
tests, cur = [], None
for ln in lines:
    m = re.match(r"^(PASS|FAIL|SKIP) (\S+) \((\d+) ms\)", ln)
    if m:
        cur = {"status": m.group(1), "name": m.group(2), "ms": int(m.group(3)), "detail": []}
        tests.append(cur)
    elif cur is not None and ln.startswith("    "):
        cur["detail"].append(ln.strip())
summ = next((l for l in lines if re.match(r"^native: \d+ passed", l)), None)
json.dump({"summary": summ, "tests": tests}, open(sys.argv[2], "w"), indent=1)
PYEOF

# ---- benchmarks
run_stage bench_ours 90 40 "'$BUILD/cuda/xpsr_cuda_bench' > '$REPORT/bench_ours.json'"
run_stage bench_torch 120 20 "$PY '$ROOT/scripts/bench_torch_ops.py' --cases '$REPORT/bench_ours.json' --out '$REPORT/bench_torch.json'"
if [[ -x "$BUILD/xpsr_bench" ]]; then
  run_stage bench_full 120 5 "'$BUILD/xpsr_bench' --device cuda --steps 20 > '$REPORT/bench_full.json'"
else
  echo "== bench_full: skipped (no xpsr_bench target in this tree)" | tee "$REPORT/bench_full.log"
  printf '{"stage":"bench_full","status":"absent","rc":null,"seconds":0,"limit":0}\n' >> "$STAGES_JSON"
fi
run_stage compare 20 0 "$PY '$ROOT/scripts/bench_torch_ops.py' --compare '$REPORT/bench_ours.json' '$REPORT/bench_torch.json' --out-md '$REPORT/compare.md' --out-json '$REPORT/compare.json'"

# ---- summary.json
$PY - "$REPORT" "$(elapsed)" <<'PYEOF' || echo "summary: python failed" >&2
import json, os, sys
rep, total = sys.argv[1], int(sys.argv[2])
def load(name):
    try:
        return json.load(open(os.path.join(rep, name)))
    except Exception:
        return None
stages = [json.loads(l) for l in open(os.path.join(rep, ".stages")) if l.strip()]
tests = load("tests.json") or {}
cmp = load("compare.json") or {}
ours = load("bench_ours.json") or {}
out = {"total_seconds": total, "stages": stages,
       "tests": {"summary": tests.get("summary"),
                 "failed": [t["name"] for t in tests.get("tests", []) if t["status"] == "FAIL"],
                 "skipped": [t["name"] for t in tests.get("tests", []) if t["status"] == "SKIP"]},
       "device": ours.get("device"), "ours_memory": ours.get("memory"),
       "compare": cmp.get("summary"), "full_bench": load("bench_full.json")}
json.dump(out, open(os.path.join(rep, "summary.json"), "w"), indent=1)
print(json.dumps({"total_seconds": total, "stages": [(s["stage"], s["status"]) for s in stages],
                  "tests": out["tests"]["summary"], "failed": out["tests"]["failed"]}, indent=1))
PYEOF
rm -f "$STAGES_JSON.tmp"
echo "report: $REPORT (total $(elapsed)s)"
# exit status: 0 only if build and tests passed
grep -q '"stage":"tests","status":"ok"' "$STAGES_JSON" && grep -q '"stage":"build","status":"ok"' "$STAGES_JSON"
