#!/usr/bin/env bash
# One-shot check of the CUDA backend on a bare CUDA host (no Node needed):
#   scripts/gpu-check.sh [REPORT_DIR]                 (default ./gpu-report; on the device tool: "$OUT")
#   XPSR_PREBUILT=.gpu/gpu-check-bin.tar.xz scripts/gpu-check.sh DIR
#                                      use binaries built elsewhere (a folder or the --package tarball; no
#                                      CMake/nvcc needed here; built from source if they do not run)
#   scripts/gpu-check.sh --package [ARCHS]   on any machine with nvcc (no GPU): builds the three binaries for
#                                      ARCHS (default 90-real: H100/H200) in build-gpu-pkg and writes
#                                      .gpu/gpu-check-bin.tar.xz (git-ignored; small enough to carry to a GPU host)
#   scripts/gpu-check.sh --self-test [DIR]   report generation on canned inputs (no GPU; ava runs it)
#
# Stages, in order, each with its own time limit = min(its cap, budget left - the least time the later stages
# need), so a slow stage cannot starve the ones after it; a failing stage is recorded and the rest still run:
#   env        checks first, with clear messages: GPU + driver (nvidia-smi), compute capability >= 8.0, SM count
#              and memory; CMake >= 3.18 and nvcc >= 12 (3-argument cudaGraphInstantiate) unless prebuilt;
#              python3 + torch (the PyTorch baseline), compute-sanitizer, ninja
#   configure / build   Release, this GPU's architecture only (or: prebuilt, a smoke run of the binaries)
#   tests_ops        the CUDA op tests first (xpsr_tests cuda_op_: every kernel and tile variant vs the CPU
#                    backend, errors and share of tolerance per case); unreported ones rerun one per process
#   tests_isolated   failed op tests again, one process each, XPSR_CUDA_SYNC=1 (a kernel fault poisons the
#                    context of every later test in the same process)
#   tests_networks   full networks CUDA vs CPU (cuda_full_size_) and fixture parity (parity_)
#   bench_ours       xpsr_cuda_bench: every op on the SD-1.5 shapes under the model AND the legacy tile policy
#   bench_torch      scripts/bench_torch_ops.py: cuBLAS / cuDNN / SDPA / group_norm on the same cases + ceilings
#   bench_full       xpsr_bench --device cuda --steps 20: CFG step, 20-step 512x512 loop, launches per step,
#                    peak device memory, graph fallbacks
#   memcheck / racecheck   compute-sanitizer over the cuda_op_small_ tests (every GEMM tile x split, every
#                    attention head dim and d=160 variant, both GroupNorm finalizes)
# The whole run fits XPSR_CHECK_BUDGET seconds (default 450; under 8 minutes on an H100/H200 with prebuilt
# binaries or a 16-core build). REPORT_DIR holds AT MOST 8 files, refreshed after every stage so a run cut
# short still leaves a readable report (scripts/gpu_report.py writes report.md and summary.json):
#   report.md  summary.json  tests.log  build.log  other.log  bench_ours.json  bench_torch.json  bench_full.json
# Scratch (per-stage logs) lives in $BUILD/gpu-check. Env: XPSR_BUILD_DIR (default <repo>/build-gpu),
# XPSR_CUDA_ARCHS (default: this GPU's compute capability, SASS only), PYTHON, XPSR_CHECK_BUDGET, JOBS.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  for c in python3 python; do command -v "$c" >/dev/null 2>&1 && { PY=$c; break; }; done
fi
PY=${PY:-python3}
export PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--self-test" ]]; then
  exec "$PY" "$ROOT/scripts/gpu_report.py" --self-test "${2:-$ROOT/build-gpu/gpu-report-selftest}"
fi
if [[ "${1:-}" == "--package" ]]; then
  PKG_ARCHS=${2:-90-real}
  PKG_BUILD="$ROOT/build-gpu-pkg"
  GEN=""
  command -v ninja >/dev/null 2>&1 && [[ ! -f "$PKG_BUILD/CMakeCache.txt" ]] && GEN="-G Ninja"
  set -e
  XPSR_CUDA=on cmake -S "$ROOT" -B "$PKG_BUILD" $GEN -DCMAKE_BUILD_TYPE=Release -DXPSR_CUDA_MODE=on -DXPSR_CUDA_ARCHS="$PKG_ARCHS"
  cmake --build "$PKG_BUILD" -j"${JOBS:-$(nproc)}" --target xpsr_tests xpsr_cuda_bench xpsr_bench xpsr_cuda_resources_json
  STAGE=$(mktemp -d)
  cp "$PKG_BUILD/xpsr_tests" "$PKG_BUILD/cuda/xpsr_cuda_bench" "$PKG_BUILD/xpsr_bench" "$PKG_BUILD/cuda-resources.json" "$STAGE/"
  strip --strip-unneeded "$STAGE/xpsr_tests" "$STAGE/xpsr_cuda_bench" "$STAGE/xpsr_bench" 2>/dev/null || true
  (cd "$ROOT" && git rev-parse HEAD > "$STAGE/GIT_COMMIT" 2>/dev/null || true)
  mkdir -p "$ROOT/.gpu"
  tar -C "$STAGE" -cJf "$ROOT/.gpu/gpu-check-bin.tar.xz" .
  rm -rf "$STAGE"
  ls -l "$ROOT/.gpu/gpu-check-bin.tar.xz"
  echo "carry .gpu and run: XPSR_PREBUILT=.gpu/gpu-check-bin.tar.xz scripts/gpu-check.sh \"\$OUT\""
  exit 0
fi

REPORT=${1:-./gpu-report}
mkdir -p "$REPORT" || { echo "cannot create $REPORT" >&2; exit 2; }
REPORT=$(cd "$REPORT" && pwd)
BUILD=${XPSR_BUILD_DIR:-$ROOT/build-gpu}
WORK="$BUILD/gpu-check"
mkdir -p "$WORK" || { echo "cannot create $WORK" >&2; exit 2; }
rm -f "$WORK"/*.log "$WORK"/stages.tsv "$WORK"/env.tsv "$WORK"/cuda-resources.json
rm -f "$REPORT"/bench_ours.json "$REPORT"/bench_torch.json "$REPORT"/bench_full.json
BUDGET=${XPSR_CHECK_BUDGET:-450}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 16)}
START=$(date +%s)
STAGES="$WORK/stages.tsv"
ENVT="$WORK/env.tsv"
: > "$STAGES"
: > "$ENVT"
GIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')

# nvcc is often installed but not on PATH on bare hosts
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-13/bin /usr/local/cuda-12/bin /opt/cuda/bin; do
    [[ -x "$d/nvcc" ]] && { export PATH="$d:$PATH"; break; }
  done
fi
command -v nvcc >/dev/null 2>&1 && export CUDACXX=${CUDACXX:-$(command -v nvcc)}
export XPSR_CUDA=on  # the top-level CMakeLists reads it

elapsed() { echo $(( $(date +%s) - START )); }

# Refresh the report folder (<= 8 files).
cat_logs() {
  local n
  for n in "$@"; do
    [[ -f "$WORK/$n.log" ]] || continue
    echo "===== $n ($(stage_status "$n")) ====="
    cat "$WORK/$n.log"
    echo
  done
}
publish() {
  cat_logs configure build prebuilt > "$REPORT/build.log"
  cat_logs tests_ops tests_rest tests_isolated tests_networks > "$REPORT/tests.log"
  cat_logs env bench_ours bench_torch bench_full memcheck racecheck > "$REPORT/other.log"
  if ! "$PY" "$ROOT/scripts/gpu_report.py" "$WORK" "$REPORT" "$(elapsed)" "$BUDGET" "$GIT" > "$WORK/report_gen.log" 2>&1; then
    { echo "# xpsr gpu-check report (MINIMAL: scripts/gpu_report.py failed, see below)"; echo
      echo '```'; cat "$STAGES"; echo; cat "$ENVT"; echo; tail -20 "$WORK/report_gen.log"
      grep -hE '^(FAIL|native: )' "$WORK"/tests_*.log 2>/dev/null; echo '```'; } > "$REPORT/report.md"
  fi
}

stage_status() { awk -F'\t' -v n="$1" '$1 == n { s = $2 } END { print s }' "$STAGES"; }
note_stage() { printf '%s\t%s\t%s\t%d\t%d\t%s\n' "$1" "$2" "${3:--}" "${4:-0}" "${5:-0}" "${6:-}" >> "$STAGES"; }

# run_stage NAME CAP RESERVE COMMAND: runs COMMAND (bash -c) with limit min(CAP, budget left - RESERVE);
# output -> $WORK/NAME.log. RESERVE = the least time the later stages need (seconds of the default 450 s
# budget; scaled with XPSR_CHECK_BUDGET).
run_stage() {
  local name=$1 cap=$2 reserve=$(( $3 * BUDGET / 450 ))
  shift 3
  local left=$(( BUDGET - $(elapsed) - reserve ))
  local limit=$cap
  (( left < limit )) && limit=$left
  local log="$WORK/$name.log"
  if (( limit < 5 )); then
    echo "== $name: skipped (time budget spent)" | tee "$log"
    note_stage "$name" skipped - 0 "$limit" "time budget spent"
    publish
    return 1
  fi
  echo "== $name (limit ${limit}s)"
  local t0=$(date +%s)
  timeout -k 10 "$limit" bash -c "$*" > "$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status=ok
  (( rc != 0 )) && status=failed
  (( rc == 124 || rc == 137 )) && status=timeout
  echo "   -> $status (rc $rc, ${dt}s)"
  note_stage "$name" "$status" "$rc" "$dt" "$limit"
  publish
  return $rc
}

# ver_ge A B: version A >= B (dotted numbers)
ver_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" == "$2" ]]; }
check() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$ENVT"; echo "   $1: $2 (needs $3): $4 ${5:-}"; }

# ---- env: checks first, with clear messages ------------------------------------------------------------------
echo "== env"
FATAL=""
{
  echo "# date"; date -u; echo; echo "# nvidia-smi"; timeout 20 nvidia-smi 2>&1; echo
  echo "# nvcc"; command -v nvcc && nvcc --version; echo; echo "# cmake"; cmake --version 2>&1 | head -1; echo
  echo "# cpu"; nproc; (lscpu | head -20) 2>/dev/null; echo; echo "# git"; (cd "$ROOT" && git rev-parse HEAD && git status --short | head -30)
} > "$WORK/env.log" 2>&1
GPU_LINE=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
CC=""
if [[ -z "$GPU_LINE" ]]; then
  check "GPU + driver" "none (nvidia-smi missing or no GPU visible)" "an NVIDIA GPU, cc >= 8.0" FAIL "nothing to run on"
  FATAL="no GPU"
else
  IFS=',' read -r G_NAME G_CC G_MEM G_DRV <<< "$GPU_LINE"
  G_NAME=$(echo "$G_NAME" | xargs); G_CC=$(echo "$G_CC" | xargs); G_MEM=$(echo "$G_MEM" | xargs); G_DRV=$(echo "$G_DRV" | xargs)
  CC=$(echo "$G_CC" | tr -d '.')
  DRV_CUDA=$(timeout 20 nvidia-smi 2>/dev/null | grep -oE 'CUDA Version: [0-9.]+' | awk '{print $3}')
  if [[ "$CC" =~ ^[0-9]+$ ]] && (( CC >= 80 )); then
    check "GPU" "$G_NAME, cc $G_CC, $G_MEM" "cc >= 8.0" ok
  else
    check "GPU" "$G_NAME, cc $G_CC" "cc >= 8.0" FAIL "the kernels use sm_80 instructions (mma.sync, cp.async, ldmatrix)"
    FATAL="compute capability $G_CC < 8.0"
  fi
  check "driver" "$G_DRV (CUDA ${DRV_CUDA:-?})" ">= the toolkit's CUDA" ok
fi
SMS=$(timeout 60 "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(p.multi_processor_count, torch.__version__, torch.version.cuda)' 2>/dev/null)
if [[ -n "$SMS" ]]; then
  read -r SM_COUNT TORCH_V TORCH_CUDA <<< "$SMS"
  check "SMs (torch)" "$SM_COUNT" "-" ok
  check "PyTorch" "$TORCH_V (CUDA $TORCH_CUDA)" "any, with CUDA" ok "the cuBLAS/cuDNN/SDPA baseline"
else
  check "PyTorch" "not importable or no CUDA" "torch with CUDA" warn "no PyTorch baseline; SM count from xpsr_cuda_bench"
fi
PREBUILT=${XPSR_PREBUILT:-}
if [[ -z "$PREBUILT" ]]; then
  CMV=$(cmake --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?')
  if [[ -z "$CMV" ]]; then check "CMake" none ">= 3.18" FAIL "install CMake (pip install cmake) or pass XPSR_PREBUILT"; FATAL="${FATAL:+$FATAL; }no CMake"
  elif ver_ge "$CMV" 3.18; then check "CMake" "$CMV" ">= 3.18" ok
  else check "CMake" "$CMV" ">= 3.18" FAIL "CUDA_ARCHITECTURES needs 3.18"; FATAL="${FATAL:+$FATAL; }CMake $CMV"; fi
  NVV=$(nvcc --version 2>/dev/null | grep -oE 'release [0-9]+\.[0-9]+' | awk '{print $2}')
  if [[ -z "$NVV" ]]; then check "nvcc" none ">= 12.0" FAIL "no CUDA toolkit on PATH (tried /usr/local/cuda*/bin)"; FATAL="${FATAL:+$FATAL; }no nvcc"
  elif ver_ge "$NVV" 12.0; then check "nvcc" "$NVV" ">= 12.0" ok "3-argument cudaGraphInstantiate"
  else check "nvcc" "$NVV" ">= 12.0" FAIL "the backend calls the 3-argument cudaGraphInstantiate (CUDA 12+)"; FATAL="${FATAL:+$FATAL; }nvcc $NVV"; fi
  if [[ -n "$NVV" && -n "${DRV_CUDA:-}" ]] && ! ver_ge "$DRV_CUDA" "$NVV"; then
    check "driver vs toolkit" "driver CUDA $DRV_CUDA < nvcc $NVV" "driver >= toolkit" warn "binaries may fail with cudaErrorInsufficientDriver"
  fi
  command -v ninja >/dev/null 2>&1 && check "ninja" "$(ninja --version)" "optional" ok || check "ninja" none optional warn "make is slower"
else
  check "prebuilt binaries" "$PREBUILT" "xpsr_tests, xpsr_cuda_bench, xpsr_bench" ok
fi
SAN=$(command -v compute-sanitizer 2>/dev/null || true)
[[ -z "$SAN" && -x /usr/local/cuda/bin/compute-sanitizer ]] && SAN=/usr/local/cuda/bin/compute-sanitizer
[[ -n "$SAN" ]] && check "compute-sanitizer" "$SAN" optional ok || check "compute-sanitizer" none optional warn "no memcheck/racecheck"
note_stage env "$([[ -n "$FATAL" ]] && echo failed || echo ok)" - "$(elapsed)" 25 "$FATAL"
publish

if [[ -n "$FATAL" ]]; then
  echo "gpu-check: cannot run: $FATAL (see $REPORT/report.md)" >&2
  exit 2
fi

# ---- binaries: prebuilt (smoke-run) or configure + build for this GPU only ----------------------------------
TESTS="$BUILD/xpsr_tests"
BENCH_OURS="$BUILD/cuda/xpsr_cuda_bench"
BENCH_FULL="$BUILD/xpsr_bench"
NEED_BUILD=1
if [[ -n "$PREBUILT" && -f "$PREBUILT" ]]; then  # the --package tarball
  mkdir -p "$BUILD/prebuilt" && tar -C "$BUILD/prebuilt" -xf "$PREBUILT" && PREBUILT="$BUILD/prebuilt"
fi
if [[ -n "$PREBUILT" ]]; then
  if run_stage prebuilt 30 330 "ls -l '$PREBUILT'; '$PREBUILT/xpsr_tests' no_test_has_this_name && '$PREBUILT/xpsr_cuda_bench' --help"; then
    TESTS="$PREBUILT/xpsr_tests"
    BENCH_OURS="$PREBUILT/xpsr_cuda_bench"
    BENCH_FULL="$PREBUILT/xpsr_bench"
    [[ -f "$PREBUILT/cuda-resources.json" ]] && cp "$PREBUILT/cuda-resources.json" "$WORK/"
    if [[ -f "$PREBUILT/GIT_COMMIT" ]]; then
      BUILT=$(cat "$PREBUILT/GIT_COMMIT")
      HEAD_NOW=$(cd "$ROOT" && git rev-parse HEAD 2>/dev/null || echo unknown)
      [[ "$BUILT" == "$HEAD_NOW" ]] && check "prebuilt commit" "${BUILT:0:10}" "= checkout" ok ||
        check "prebuilt commit" "${BUILT:0:10}" "= checkout (${HEAD_NOW:0:10})" warn "binaries from another commit than these sources/fixtures"
    fi
    NEED_BUILD=0
  else
    echo "   prebuilt binaries do not run here: building from source"
  fi
fi
if (( NEED_BUILD )); then
  ARCHS=${XPSR_CUDA_ARCHS:-${CC}-real}
  GEN=""
  command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD/CMakeCache.txt" ]] && GEN="-G Ninja"
  run_stage configure 90 330 "cmake -S '$ROOT' -B '$BUILD' $GEN -DCMAKE_BUILD_TYPE=Release -DXPSR_CUDA_MODE=on -DXPSR_CUDA_ARCHS=$ARCHS"
  run_stage build 240 230 "cmake --build '$BUILD' -j$JOBS --target xpsr_tests xpsr_cuda_bench xpsr_bench xpsr_cuda_resources_json"
  [[ -f "$BUILD/cuda-resources.json" ]] && cp "$BUILD/cuda-resources.json" "$WORK/"
  publish
fi
if [[ ! -x "$TESTS" ]]; then
  note_stage tests_ops skipped - 0 0 "no xpsr_tests binary (build failed)"
  publish
  echo "gpu-check: no test binary; report: $REPORT/report.md" >&2
  exit 1
fi
# compiled-in paths point at the machine that built the binaries
export XPSR_FIXTURES="$ROOT/test/fixtures"
export XPSR_TEST_DATA="$BUILD/test-data"
mkdir -p "$XPSR_TEST_DATA"

# ---- CUDA op tests first ------------------------------------------------------------------------------------
run_stage tests_ops 150 195 "cd '$ROOT' && '$TESTS' cuda_op_"
op_test_names() { grep -ohE '^TEST\(cuda_op_[A-Za-z0-9_]+\)' "$ROOT"/native/cuda/*_test.cu | sed -E 's/^TEST\((.*)\)/\1/' | sort -u; }
if ! grep -qE '^native: ' "$WORK/tests_ops.log"; then
  # the runner died or timed out: the tests it did not report, one process each
  REST=$(for n in $(op_test_names); do grep -qE "^(PASS|FAIL|SKIP) $n " "$WORK/tests_ops.log" || echo "$n"; done | tr '\n' ' ')
  [[ -n "$REST" ]] && run_stage tests_rest 90 180 "cd '$ROOT'; for n in $REST; do echo \"### \$n\"; XPSR_CUDA_SYNC=1 timeout 45 '$TESTS' \"\$n\"; done"
fi
FAILED=$(grep -hoE '^FAIL cuda_op_[A-Za-z0-9_]+' "$WORK/tests_ops.log" "$WORK/tests_rest.log" 2>/dev/null | awk '{print $2}' | sort -u | head -12 | tr '\n' ' ')
[[ -n "$FAILED" ]] && run_stage tests_isolated 60 180 "cd '$ROOT'; for n in $FAILED; do echo \"### \$n\"; XPSR_CUDA_SYNC=1 timeout 40 '$TESTS' \"\$n\"; done"

# ---- full networks and parity -------------------------------------------------------------------------------
run_stage tests_networks 100 150 "cd '$ROOT'; rc=0; '$TESTS' cuda_full_size_ || rc=\$?; '$TESTS' parity_ || rc=\$?; exit \$rc"

# ---- benchmarks -------------------------------------------------------------------------------------------------
run_stage bench_ours 75 115 "'$BENCH_OURS' > '$REPORT/bench_ours.json'"
if [[ -s "$REPORT/bench_ours.json" ]]; then
  run_stage bench_torch 90 85 "$PY '$ROOT/scripts/bench_torch_ops.py' --cases '$REPORT/bench_ours.json' --out '$REPORT/bench_torch.json'"
else
  note_stage bench_torch skipped - 0 0 "no bench_ours.json"
fi
if [[ -x "$BENCH_FULL" ]]; then
  run_stage bench_full 90 40 "'$BENCH_FULL' --device cuda --latent 64 --steps 20 > '$REPORT/bench_full.json'"
else
  note_stage bench_full absent - 0 0 "no xpsr_bench binary"
fi

# ---- compute-sanitizer over the small shapes of every kernel variant ----------------------------------------
if [[ -n "$SAN" ]]; then
  run_stage memcheck 45 20 "cd '$ROOT' && '$SAN' --tool memcheck --leak-check no --error-exitcode 3 --print-limit 20 '$TESTS' cuda_op_small_"
  run_stage racecheck 40 0 "cd '$ROOT' && '$SAN' --tool racecheck --racecheck-report hazard --error-exitcode 3 --print-limit 20 '$TESTS' cuda_op_small_"
else
  note_stage memcheck absent - 0 0 "compute-sanitizer not found"
fi

publish
echo "report: $REPORT (total $(elapsed)s): $(ls "$REPORT" | tr '\n' ' ')"
head -30 "$REPORT/report.md"
# exit status: 0 only if every op test ran and passed (none skipped: the GPU must be usable by the tests)
# and every network/parity test passed
[[ "$(stage_status tests_ops)" == ok && "$(stage_status tests_networks)" == ok ]] && ! grep -q '^SKIP cuda_op_' "$WORK/tests_ops.log"
