#!/usr/bin/env bash
# EdgeTier GPU check kit: the GPU tests and the GPU figures, in one run of under 8 minutes.
#
#   benchmarks/gpu_check.sh              # on a machine with an NVIDIA GPU (or a Jetson)
#   benchmarks/gpu_check.sh --dry-run    # print the plan; also what happens without a GPU
#
# onnxruntime and onnxruntime-gpu install the same module and cannot share a venv, so the
# kit builds its own (.venv-gpu) with onnxruntime-gpu, the CUDA/cuDNN wheels and the
# TensorRT libraries that this onnxruntime-gpu links against. Then it:
#   1. runs the `gpu` tests there, and fails if any of them is skipped;
#   2. measures TensorRT FP16, CUDA FP32 and CPU on ResNet-50 (random weights, the demo
#      repository's) at batch 1 and 8, with energy per inference (edgetier bench model);
#   3. checks the TensorRT engine cache: reused across restarts, not across versions;
#   4. records NVML telemetry (edgetier hw probe, edgetier hw top), which energy meter is
#      chosen and whether it measures, the thermal governor on live readings, and the
#      server's Triton-style GPU metrics (nv_gpu_*, nv_energy_consumption);
#   5. compares the server with raw ONNX Runtime on the GPU (edgetier bench compare).
# Everything lands in var/gpu-check/<date>/ with a summary.md; see docs/gpu.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
VENV=${GPU_VENV:-$ROOT/.venv-gpu}
OUT=${GPU_CHECK_OUT:-$ROOT/var/gpu-check/$(date +%Y%m%d-%H%M%S)}
ORT_GPU=${ORT_GPU_SPEC:-onnxruntime-gpu[cuda,cudnn]}
MEASURE_S=${MEASURE_S:-2}   # seconds per measured point
REPEATS=${REPEATS:-3}       # medians of this many repeats
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

gpu_present() {
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
        return 0
    fi
    [ -e /etc/nv_tegra_release ]  # a Jetson: no nvidia-smi on older JetPacks
}

plan() {
    cat <<EOF
EdgeTier GPU check kit: the plan
  venv        $VENV: edgetier[test] with $ORT_GPU instead of onnxruntime,
              plus tensorrt-cu12-libs of the major version onnxruntime-gpu links against
  1 tests     pytest -m gpu tests/unit/runtime (a skipped gpu test fails the kit)
  2 engines   edgetier bench model resnet50 --providers tensorrt,cuda,cpu
              --precisions fp32,fp16 --batch-sizes 1,8 (${MEASURE_S} s x ${REPEATS}, energy on)
  3 cache     python benchmarks/gpu_engine_cache.py: cold build, restart, version 2
  4 telemetry edgetier hw probe; edgetier hw top --json --count 5; the energy meter;
              edgetier hw govern --count 5; the server's nv_gpu_* / nv_energy metrics
  5 server    edgetier bench compare resnet50 --systems onnxruntime,edgetier
              --provider cuda --batch-sizes 1,8 --concurrency 1,8
  outputs     $OUT (summary.md, *.json, *.md, logs)
EOF
}

if [ "$DRY" = 1 ] || ! gpu_present; then
    gpu_present || echo "No NVIDIA GPU on this machine (no nvidia-smi GPU, not a Jetson): nothing is run."
    plan
    exit 0
fi

START=$(date +%s)
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
step() { echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$LOG"; }

step "environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip install -q -c $ROOT/constraints.txt"
# edgetier and its test tools; then swap the CPU wheel for the GPU one (same module name)
$PIP -e "$ROOT[test]" >>"$LOG" 2>&1
"$VENV/bin/pip" uninstall -q -y onnxruntime >>"$LOG" 2>&1 || true
"$VENV/bin/pip" install -q "$ORT_GPU" >>"$LOG" 2>&1
TRT_MAJOR=$("$VENV/bin/python" - <<'EOF'
import pathlib, re, onnxruntime
lib = pathlib.Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
found = re.findall(rb"libnvinfer\.so\.(\d+)", lib.read_bytes()) if lib.exists() else []
print(found[0].decode() if found else "")
EOF
)
if [ -n "$TRT_MAJOR" ]; then
    "$VENV/bin/pip" install -q "tensorrt-cu12-libs>=$TRT_MAJOR,<$((TRT_MAJOR + 1))" >>"$LOG" 2>&1 \
        || echo "TensorRT $TRT_MAJOR libraries did not install: TensorRT runs will be missing" | tee -a "$LOG"
fi
# the CUDA, cuDNN and TensorRT wheels keep their libraries in site-packages
LIBS=$("$VENV/bin/python" - <<'EOF'
import pathlib, site
dirs = set()
for base in site.getsitepackages():
    for pattern in ("nvidia/*/lib", "tensorrt_libs"):
        dirs.update(str(p) for p in pathlib.Path(base).glob(pattern) if p.is_dir())
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ET="$VENV/bin/edgetier"
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv 2>/dev/null | tee -a "$LOG" || true

FAILED=()
run() {  # run NAME SECONDS COMMAND...: log it, time-box it, remember a failure
    local name=$1 limit=$2
    shift 2
    step "$name"
    if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        FAILED+=("$name")
        echo "   $name failed (see $OUT/$name.log)" | tee -a "$LOG"
    fi
}

cd "$ROOT"
run tests 150 "$VENV/bin/python" -m pytest -q -m gpu -rs -p no:cacheprovider \
    --junitxml="$OUT/gpu-tests.xml" tests/unit/runtime
if grep -q "<skipped" "$OUT/gpu-tests.xml" 2>/dev/null; then
    FAILED+=("tests-skipped")
    echo "   a gpu test was skipped: the GPU paths did not all run" | tee -a "$LOG"
fi

run demo 60 "$ET" model demo "$OUT/models" --model resnet50
run engines 150 "$ET" bench model "$OUT/models/resnet50/1/model.onnx" \
    --providers tensorrt,cuda,cpu --precisions fp32,fp16 --batch-sizes 1,8 \
    --duration-s "$MEASURE_S" --warmup-s 1 --repeats "$REPEATS" --no-plots --no-progress \
    --out "$OUT/engines"
run cache 150 "$VENV/bin/python" benchmarks/gpu_engine_cache.py \
    --repo "$OUT/cache-repo" --out "$OUT/engine-cache.json"
run probe 30 "$ET" hw probe
run top 30 "$ET" hw top --json --count 5 --interval-s 0.5
run energy 30 "$VENV/bin/python" -c "
import time
from edgetier.hardware import open_energy_meter
meter = open_energy_meter(); meter.start(); time.sleep(5)
print('source', meter.source, 'estimated', meter.estimated, 'joules', meter.stop())"
run govern 30 "$ET" hw govern --count 5 --interval-s 1
run metrics 60 bash -c '
"$0" serve --model-repository "$1" --http-port 0 --grpc-port 0 --metrics-port 18002 \
    --log-level warning & pid=$!
for _ in $(seq 60); do curl -sf localhost:18002/metrics >/dev/null && break; sleep 1; done
curl -s localhost:18002/metrics | grep -E "^(# TYPE )?nv_(gpu|energy)"
kill -TERM $pid; wait $pid' "$ET" "$OUT/models"
run server 120 "$ET" bench compare "$OUT/models/resnet50" --systems onnxruntime,edgetier \
    --provider cuda --batch-sizes 1,8 --concurrency 1,8 --duration-s "$MEASURE_S" \
    --repeats 1 --no-plots --no-progress --out "$OUT/server"

TOTAL=$(( $(date +%s) - START ))
{
    echo "# GPU check, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || cat /etc/nv_tegra_release 2>/dev/null | head -1)"
    echo "Command: benchmarks/gpu_check.sh; $TOTAL s in all; failed steps: ${FAILED[*]:-none}"
    for part in engines server; do
        [ -f "$OUT/$part.md" ] && { echo; cat "$OUT/$part.md"; }
    done
    [ -f "$OUT/engine-cache.json" ] && { echo; echo '```json'; cat "$OUT/engine-cache.json"; echo '```'; }
} >"$OUT/summary.md"
step "done in $TOTAL s: $OUT/summary.md"
[ "${#FAILED[@]}" -eq 0 ]
