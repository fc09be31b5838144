#!/usr/bin/env bash
# One-shot check for a bare CUDA host without Node (needs nvcc and CMake >= 3.18; PyTorch with CUDA for the
# baseline; python3 or python for the JSON summary):
#   scripts/gpu-check.sh [REPORT_DIR]        (default ./gpu-report; e.g. scripts/gpu-check.sh "$OUT")
# Stages: env -> configure -> build (Release, -j$(nproc), this GPU's architecture only) -> xpsr_tests (all
# native tests: the CUDA op tests, the full-network CUDA-vs-CPU tests and the parity tests reading
# <repo>/test/fixtures through the compiled-in XPSR_FIXTURES_DEFAULT) -> failed/unreported tests again, one
# process each with XPSR_CUDA_SYNC=1 (a kernel fault poisons the CUDA context for every later test in the
# same process) -> xpsr_cuda_bench (our ops) -> bench_torch_ops.py (cuBLAS / cuDNN / SDPA on the same GPU)
# -> comparison -> compute-sanitizer memcheck + racecheck over the "cuda_small_" tests -> xpsr_bench
# --device cuda (full network). Every stage has its own time limit inside a global budget
# (XPSR_CHECK_BUDGET, default 450 s, so the whole run ends within 8 minutes); a failing stage is recorded
# and later stages still run.
#
# REPORT_DIR holds AT MOST 8 plain files (the report comes back through a tool that returns <= 8 files),
# refreshed after every stage so a run cut short still leaves a readable report:
#   report.md        everything important in one page: stages, device, test summary + failures + the CUDA
#                    tests' error/tolerance lines, ours-vs-torch table, sanitizer verdicts, tails of failed logs
#   summary.json     machine-readable: stages, test lists, compare summary + rows, memory
#   tests.log        full xpsr_tests output (+ isolated reruns)
#   build.log        configure + build output
#   bench_ours.json  xpsr_cuda_bench      bench_torch.json  bench_torch_ops.py      bench_full.json  xpsr_bench
#   other.log        env, benchmark stderr tables, compare, sanitizer output
# Scratch (per-stage logs) lives in $BUILD/gpu-check, outside the report.
# Env: XPSR_BUILD_DIR (default <repo>/build-gpu), XPSR_CUDA_ARCHS (default: this GPU's compute capability,
#      SASS only), PYTHON (default python3, else python), XPSR_CHECK_BUDGET (seconds), JOBS (default nproc).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPORT=${1:-./gpu-report}
mkdir -p "$REPORT" || { echo "cannot create $REPORT" >&2; exit 2; }
REPORT=$(cd "$REPORT" && pwd)
BUILD=${XPSR_BUILD_DIR:-$ROOT/build-gpu}
WORK="$BUILD/gpu-check"
mkdir -p "$WORK" || { echo "cannot create $WORK" >&2; exit 2; }
rm -f "$WORK"/*.log "$WORK"/stages.tsv
BUDGET=${XPSR_CHECK_BUDGET:-450}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 16)}
START=$(date +%s)
STAGES="$WORK/stages.tsv"
: > "$STAGES"

# nvcc is often installed but not on PATH on bare hosts
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-13/bin /usr/local/cuda-12/bin /opt/cuda/bin; do
    [[ -x "$d/nvcc" ]] && { export PATH="$d:$PATH"; break; }
  done
fi
command -v nvcc >/dev/null 2>&1 && export CUDACXX=${CUDACXX:-$(command -v nvcc)}

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  for c in python3 python; do command -v "$c" >/dev/null 2>&1 && { PY=$c; break; }; done
fi
PY=${PY:-python3}
export PYTHONUNBUFFERED=1

elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME CAP_SECONDS RESERVE_SECONDS COMMAND
#   runs COMMAND (through bash -c) with timeout min(CAP, budget left - RESERVE); stdout+stderr go to
#   $WORK/NAME.log. RESERVE = the least time the later stages need (a slow build cannot starve the tests).
run_stage() {
  local name=$1 cap=$2 reserve=$3
  shift 3
  local left=$(( BUDGET - $(elapsed) - reserve ))
  local limit=$cap
  (( left < limit )) && limit=$left
  local log="$WORK/$name.log"
  if (( limit < 5 )); then
    echo "== $name: skipped (time budget spent)" | tee "$log"
    printf '%s\tskipped\t-\t0\t%d\n' "$name" "$limit" >> "$STAGES"
    publish
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
  printf '%s\t%s\t%d\t%d\t%d\n' "$name" "$status" "$rc" "$dt" "$limit" >> "$STAGES"
  publish
  return $rc
}

stage_status() { awk -F'\t' -v n="$1" '$1 == n { s = $2 } END { print s }' "$STAGES"; }

# cat the logs of the given stages (those that exist), each under a header
cat_logs() {
  local n
  for n in "$@"; do
    [[ -f "$WORK/$n.log" ]] || continue
    echo "===== $n ($(stage_status "$n")) ====="
    cat "$WORK/$n.log"
    echo
  done
}

# Refresh the report files (at most 8 in REPORT).
publish() {
  cat_logs configure build > "$REPORT/build.log"
  cat_logs tests tests_isolated tests_rest > "$REPORT/tests.log"
  cat_logs env bench_ours bench_torch compare memcheck racecheck bench_full > "$REPORT/other.log"
  write_report
}

write_report() {
  local tmp="$WORK/report.md.tmp"
  {
    echo "# xpsr gpu-check report"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'); elapsed $(elapsed) s of a ${BUDGET} s budget; git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "## Stages"
    echo
    echo "| stage | status | rc | seconds | limit |"
    echo "|---|---|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$STAGES"
    echo
    if [[ -f "$WORK/env.log" ]]; then
      echo "## Device"
      echo
      echo '```'
      grep -E 'NVIDIA|Driver Version|CUDA Version|release|cmake version|^[0-9]+$|torch|Python|Model name' "$WORK/env.log" | head -20
      echo '```'
      echo
    fi
    if [[ -f "$WORK/tests.log" ]]; then
      echo "## Tests"
      echo
      echo '```'
      grep -hE '^native: ' "$WORK/tests.log" "$WORK/tests_isolated.log" "$WORK/tests_rest.log" 2>/dev/null
      echo '```'
      if grep -qE '^FAIL ' "$WORK/tests.log" "$WORK/tests_isolated.log" "$WORK/tests_rest.log" 2>/dev/null; then
        echo
        echo "### Failures (first run, then isolated reruns with XPSR_CUDA_SYNC=1)"
        echo
        echo '```'
        grep -hE -A4 '^FAIL ' "$WORK/tests.log" "$WORK/tests_isolated.log" "$WORK/tests_rest.log" 2>/dev/null | cut -c1-400 | head -150
        echo '```'
      fi
      echo
      echo "### CUDA op tests: error vs tolerance (highest share of tolerance used first)"
      echo
      echo '```'
      grep -hE 'tol used' "$WORK/tests.log" | sed -E 's/^ +//' |
        awk '{ m = match($0, /tol used [0-9.inf]+%/); v = substr($0, RSTART + 9, RLENGTH - 10); print (v == "inf" ? 1e9 : v + 0) "\t" $0 }' |
        sort -t$'\t' -k1,1 -g -r | cut -f2- | head -60
      echo '```'
      echo
      echo "### Full networks (CUDA vs CPU)"
      echo
      echo '```'
      grep -hE 'rel_rms' "$WORK/tests.log" | sed -E 's/^ +//' | head -20
      echo '```'
      echo
    fi
    if [[ -f "$WORK/compare.md" ]]; then
      echo "## Ours vs PyTorch"
      echo
      sed -E 's/^# /### /' "$WORK/compare.md"
      echo
    elif [[ -f "$WORK/bench_ours.log" ]]; then
      echo "## Our op timings (no comparison)"
      echo
      echo '```'
      cat "$WORK/bench_ours.log" | head -80
      echo '```'
      echo
    fi
    local t
    for t in memcheck racecheck; do
      [[ -f "$WORK/$t.log" ]] || continue
      echo "## compute-sanitizer $t ($(stage_status "$t"))"
      echo
      echo '```'
      grep -hE 'ERROR SUMMARY|^=+ (Invalid|Race|Error|Warning)|^native: |^FAIL ' "$WORK/$t.log" | sort | uniq -c | sort -rn | head -20
      echo '```'
      echo
    done
    if [[ -f "$WORK/bench_full.log" ]]; then
      echo "## Full-network benchmark (xpsr_bench --device cuda)"
      echo
      echo '```'
      tail -25 "$WORK/bench_full.log"
      echo '```'
      echo
    fi
    local name status
    while IFS=$'\t' read -r name status _; do
      [[ "$status" == failed || "$status" == timeout ]] || continue
      echo "## Tail of $name.log ($status)"
      echo
      echo '```'
      tail -40 "$WORK/$name.log" | cut -c1-400
      echo '```'
      echo
    done < "$STAGES"
  } > "$tmp" 2>/dev/null
  cp "$tmp" "$REPORT/report.md"
}

# ---- env
run_stage env 20 300 "
  echo '# date'; date -u; echo; echo '# nvidia-smi'; nvidia-smi || true; echo
  echo '# nvcc'; command -v nvcc; nvcc --version || true; echo; echo '# cmake'; cmake --version || true; echo
  echo '# cpu'; nproc; (lscpu | head -20) || true; echo
  echo '# python / torch'; $PY -c 'import torch,sys;print(\"Python\", sys.version.split()[0]);print(\"torch\", torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' || true
  echo; echo '# compute-sanitizer'; command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo none
  echo; echo '# git'; (cd '$ROOT' && git rev-parse HEAD && git status --short | head -50) || true
"

# build for this GPU only (SASS, no PTX: the fastest build) unless XPSR_CUDA_ARCHS is given
ARCHS=${XPSR_CUDA_ARCHS:-}
if [[ -z "$ARCHS" ]]; then
  CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$CC" =~ ^[0-9]+$ ]] && ARCHS="${CC}-real"
fi
ARCH_FLAG=""
[[ -n "$ARCHS" ]] && ARCH_FLAG="-DXPSR_CUDA_ARCHS=$ARCHS"
GEN=""
command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD/CMakeCache.txt" ]] && GEN="-G Ninja"

# ---- configure + build (only what the check runs)
run_stage configure 90 280 "cmake -S '$ROOT' -B '$BUILD' $GEN -DCMAKE_BUILD_TYPE=Release -DXPSR_CUDA_MODE=on $ARCH_FLAG"
TARGETS="--target xpsr_tests --target xpsr_cuda_bench"
grep -q 'xpsr_bench' "$BUILD/CMakeFiles/TargetDirectories.txt" 2>/dev/null && TARGETS="$TARGETS --target xpsr_bench"
# cmake --build with several --target needs CMake 3.15+; fall back to one build per target otherwise
run_stage build 200 220 "cmake --build '$BUILD' -j$JOBS $TARGETS || { for t in xpsr_tests xpsr_cuda_bench xpsr_bench; do cmake --build '$BUILD' -j$JOBS --target \$t || [[ \$t == xpsr_bench ]] || exit 1; done; }"

# ---- tests (all native tests; CUDA op tests print max errors and % of tolerance used)
TESTS="$BUILD/xpsr_tests"
run_stage tests 170 150 "cd '$ROOT' && '$TESTS'"
# Names of every registered test (from the sources), to rerun what the first run did not report
all_test_names() {
  grep -ohE '^TEST\(([A-Za-z0-9_]+)\)' "$ROOT"/native/*/*_test.cpp "$ROOT"/native/*/*_test.cu "$ROOT"/native/test/*.cpp 2>/dev/null |
    sed -E 's/^TEST\((.*)\)/\1/' | sort -u
}
if [[ -x "$TESTS" && -f "$WORK/tests.log" ]]; then
  if ! grep -qE '^native: ' "$WORK/tests.log"; then
    # the runner died or timed out: run the tests it did not report, one process each
    REST=$(for n in $(all_test_names); do grep -qE "^(PASS|FAIL|SKIP) $n " "$WORK/tests.log" || echo "$n"; done | head -40 | tr '\n' ' ')
    [[ -n "$REST" ]] && run_stage tests_rest 120 150 "cd '$ROOT'; for n in $REST; do echo \"### \$n\"; XPSR_CUDA_SYNC=1 timeout 60 '$TESTS' \"\$n\"; done"
  fi
  FAILED=$(grep -hoE '^FAIL [A-Za-z0-9_]+' "$WORK/tests.log" "$WORK/tests_rest.log" 2>/dev/null | awk '{print $2}' | sort -u | head -12 | tr '\n' ' ')
  # each failed test alone in a fresh process (a sticky kernel fault in one test fails all later CUDA tests)
  [[ -n "$FAILED" ]] && run_stage tests_isolated 90 150 "cd '$ROOT'; for n in $FAILED; do echo \"### \$n\"; XPSR_CUDA_SYNC=1 timeout 40 '$TESTS' \"\$n\"; done"
fi
$PY - "$WORK/tests.log" "$WORK/tests.json" <<'PYEOF' 2>/dev/null || true
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
BENCH_OURS="$BUILD/cuda/xpsr_cuda_bench"
run_stage bench_ours 75 140 "'$BENCH_OURS' > '$REPORT/bench_ours.json'"
run_stage bench_torch 110 60 "$PY '$ROOT/scripts/bench_torch_ops.py' --cases '$REPORT/bench_ours.json' --out '$REPORT/bench_torch.json'"
run_stage compare 15 55 "$PY '$ROOT/scripts/bench_torch_ops.py' --compare '$REPORT/bench_ours.json' '$REPORT/bench_torch.json' --out-md '$WORK/compare.md' --out-json '$WORK/compare.json'"

# ---- compute-sanitizer over the small-shape tests (out-of-bounds accesses, shared-memory races)
SAN=$(command -v compute-sanitizer 2>/dev/null || true)
[[ -z "$SAN" && -x /usr/local/cuda/bin/compute-sanitizer ]] && SAN=/usr/local/cuda/bin/compute-sanitizer
if [[ -n "$SAN" && -x "$TESTS" ]]; then
  run_stage memcheck 45 45 "cd '$ROOT' && '$SAN' --tool memcheck --leak-check no --error-exitcode 3 --print-limit 20 '$TESTS' cuda_small_"
  run_stage racecheck 40 40 "cd '$ROOT' && '$SAN' --tool racecheck --racecheck-report hazard --error-exitcode 3 --print-limit 20 '$TESTS' cuda_small_"
else
  printf 'memcheck\tabsent\t-\t0\t0\n' >> "$STAGES"
fi

# ---- full network
if [[ -x "$BUILD/xpsr_bench" ]]; then
  run_stage bench_full 120 5 "'$BUILD/xpsr_bench' --device cuda --steps 20 > '$REPORT/bench_full.json'"
else
  printf 'bench_full\tabsent\t-\t0\t0\n' >> "$STAGES"
fi

# ---- summary.json
$PY - "$REPORT" "$WORK" "$(elapsed)" <<'PYEOF' || echo "summary: python failed" >&2
import json, os, sys
rep, work, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(path):
    try:
        return json.load(open(path))
    except Exception:
        return None
stages = []
for l in open(os.path.join(work, "stages.tsv")):
    f = l.rstrip("\n").split("\t")
    if len(f) >= 5:
        stages.append({"stage": f[0], "status": f[1], "rc": None if f[2] == "-" else int(f[2]),
                       "seconds": int(f[3]), "limit": int(f[4])})
tests = load(os.path.join(work, "tests.json")) or {}
cmp = load(os.path.join(work, "compare.json")) or {}
ours = load(os.path.join(rep, "bench_ours.json")) or {}
out = {"total_seconds": total, "stages": stages,
       "tests": {"summary": tests.get("summary"),
                 "failed": [t["name"] for t in tests.get("tests", []) if t["status"] == "FAIL"],
                 "skipped": [t["name"] for t in tests.get("tests", []) if t["status"] == "SKIP"],
                 "failure_details": {t["name"]: t["detail"][:6] for t in tests.get("tests", []) if t["status"] == "FAIL"}},
       "device": ours.get("device"), "ours_memory": ours.get("memory"), "graph_fallbacks": ours.get("graph_fallbacks"),
       "compare": cmp.get("summary"), "compare_rows": cmp.get("rows")}
json.dump(out, open(os.path.join(rep, "summary.json"), "w"), indent=1)
print(json.dumps({"total_seconds": total, "stages": [(s["stage"], s["status"]) for s in stages],
                  "tests": out["tests"]["summary"], "failed": out["tests"]["failed"]}, indent=1))
PYEOF
publish
echo "report: $REPORT (total $(elapsed)s): $(ls "$REPORT" | tr '\n' ' ')"
# exit status: 0 only if build and tests passed
[[ "$(stage_status build)" == ok && "$(stage_status tests)" == ok ]]
