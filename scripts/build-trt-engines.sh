#!/usr/bin/env bash
# Builds TensorRT fp16 engines from an ONNX export (`xpsr export onnx ... --out DIR`) with trtexec: one
# engine per exported file (static shapes: one per image size), a shared timing cache, a log per engine.
#
#   scripts/build-trt-engines.sh EXPORT_DIR [ENGINE_DIR]
#
# Environment: TRTEXEC (default: trtexec on PATH or /usr/src/tensorrt/bin/trtexec), TRT_WORKSPACE_MB
# (default 8192), TRT_EXTRA (extra trtexec flags, e.g. "--builderOptimizationLevel=5").
#
# UNCHECKED: TensorRT is not installable on the project's machines; this script has not been run against a
# real TensorRT. What IS checked is the ONNX it consumes (onnxruntime reproduces the official outputs from
# it, test/onnx.test.mjs) and this script's own logic (bash -n, and a dry run with a stub trtexec:
# XPSR_TRT_DRY_RUN=1 prints the commands instead of running them). See docs/onnx.md.
set -euo pipefail

export_dir=${1:?usage: $0 EXPORT_DIR [ENGINE_DIR]}
engine_dir=${2:-$export_dir/trt}
manifest="$export_dir/manifest.json"
[ -f "$manifest" ] || { echo "no $manifest: run 'xpsr export onnx ... --out $export_dir' first" >&2; exit 2; }

trtexec=${TRTEXEC:-}
if [ -z "$trtexec" ]; then
  if command -v trtexec >/dev/null; then trtexec=$(command -v trtexec)
  elif [ -x /usr/src/tensorrt/bin/trtexec ]; then trtexec=/usr/src/tensorrt/bin/trtexec
  elif [ -z "${XPSR_TRT_DRY_RUN:-}" ]; then echo "trtexec not found: install TensorRT or set TRTEXEC" >&2; exit 2
  else trtexec=trtexec
  fi
fi
mkdir -p "$engine_dir"
cache="$engine_dir/timing.cache"

# The exported files and their static input shapes, from the manifest (node is here: xpsr needs it).
mapfile -t rows < <(node -e '
  const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (m.dynamicBatch) { console.error("dynamic-batch exports need optimisation profiles; export with a static batch for this script"); process.exit(3); }
  for (const f of m.files) {
    const shapes = f.inputs.map((i) => `${i.name}:${i.shape.join("x")}`).join(",");
    console.log(`${f.file}\t${shapes}\t${m.dtype}`);
  }' "$manifest")

for row in "${rows[@]}"; do
  IFS=$'\t' read -r file shapes dtype <<<"$row"
  name=${file%.onnx}
  plan="$engine_dir/$name.plan"
  # Precision: fp16 kernels allowed; the exported norms and softmax are float32 subgraphs in an fp16
  # export, so TensorRT keeps them in float32 either way.
  # Static shapes come from the file itself (trtexec refuses --shapes for a static model).
  cmd=("$trtexec" "--onnx=$export_dir/$file" "--saveEngine=$plan" "--fp16"
       "--timingCacheFile=$cache" "--memPoolSize=workspace:${TRT_WORKSPACE_MB:-8192}" "--skipInference")
  # shellcheck disable=SC2206
  [ -n "${TRT_EXTRA:-}" ] && cmd+=(${TRT_EXTRA})
  echo "== $name ($dtype ONNX, inputs $shapes) -> $plan"
  if [ -n "${XPSR_TRT_DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}"; echo
    continue
  fi
  "${cmd[@]}" > "$engine_dir/$name.log" 2>&1 || { echo "trtexec failed for $file: see $engine_dir/$name.log" >&2; exit 1; }
done
echo "engines in $engine_dir (timing cache $cache)"
