#!/usr/bin/env bash
# One prepared GPU check (issues 20 and 26): everything a session with an accelerator should measure, in at most
# 7 minutes of steps on one GPU (a 2-GPU DDP run when two exist), with one JSON summary at the end.
#
#   bash experiments/bench/gpu_check.sh            # writes into $OUT (the device tool's folder) or /tmp/t2cr_gpu_check
#
# Steps (each bounded by `timeout`, each one's output kept in its own file, a failed step does not stop the rest):
#   lightning     `t2cr-train` at the paper's clip size (103 frames, 16 x 112 x 112 clips, M = 10, N = 8, I3D,
#                 2 pairs a step) through Lightning: step time, pairs per second and peak memory for fp32
#                 (exact), bf16-mixed, bf16 + channels-last and torch.compile (its first step is the compile)
#   deterministic the same run twice with trainer.deterministic=true, last.ckpt compared tensor by tensor
#   softdtw       the CUDA Soft-DTW path (captured graphs and eager) against the CPU in float64, for float64,
#                 float32 and bfloat16 inputs
#   bench_eval    clip passes and time of the K-exemplar evaluation (features once vs per pair)
#   ddp2          1 GPU against 2 (trainer=ddp, the same global batch): per-step losses (only with two GPUs)
# On a machine without a GPU it says so and exits 0.
# On a bare CUDA image (no Hydra, no network): first, where pip reaches PyPI, `bash experiments/bench/wheelhouse.sh`
# (.whl/, about 0.4 MiB); this script installs those wheels into a temporary folder, puts src/ on the path (no
# install of t2cr), and stops with one line if an import fails. Every step runs under `timeout -k`, their limits
# and kill graces add up to at most 7 minutes (tests/test_gpu_check.py checks it), the runs work under
# $WORK (/tmp), and $OUT receives only summary.json and gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/t2cr_gpu_check}
WORK=${WORK:-/tmp/t2cr_gpu_work}
WHEELS=${WHEELS:-.whl}
KILL_AFTER=5  # seconds a step gets to end after its limit before it is killed (and its GPU memory freed)

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch on this machine; nothing to measure"
    exit 0
fi
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/*.rc  # a step of an earlier check is no step of this one
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
        || { echo "gpu_check: could not install the wheels of $WHEELS into $WORK/site" >&2; exit 2; }
fi
export PYTHONPATH="$WORK/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! error=$("$PYTHON" -c "import hydra, omegaconf, pytorch_lightning, t2cr.cli.train" 2>&1); then
    echo "gpu_check: cannot import what training needs ($(echo "$error" | tail -1)); run experiments/bench/wheelhouse.sh where pip reaches PyPI and bring .whl/ along" >&2
    exit 2
fi
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
export PYTHONWARNINGS=ignore WANDB_MODE=disabled
echo "gpu_check: $GPUS GPU(s): $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))"), results in $OUT"

step() {  # step NAME SECONDS COMMAND...: run under timeout -k, keep stdout/stderr and the exit status in $WORK
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout -k "$KILL_AFTER" "$limit" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    echo $? > "$WORK/$name.rc"
    echo "gpu_check: $name exit $(cat "$WORK/$name.rc") in $((SECONDS - start)) s"
}

LIGHTNING=("$PYTHON" experiments/bench/bench_lightning.py --preset paper --accelerator gpu --workers 4
           --work "$WORK/lightning" --json)
step lightning 180 "${LIGHTNING[@]}" --steps 8 --variants fp32,bf16,bf16_channels_last,compile --timeout 80
step deterministic 75 "${LIGHTNING[@]}" --steps 3 --variants "" --deterministic-twice --timeout 35
step softdtw 25 "$PYTHON" -c "
import json, torch, t2cr.losses as L
print(json.dumps({str(d).split('.')[-1]: L.soft_dtw_cuda_selfcheck(d) for d in (torch.float64, torch.float32, torch.bfloat16)}))"
step bench_eval 50 "$PYTHON" experiments/bench/bench_eval.py --size 112 --frames 103 --clip-length 16 \
    --base-clips 10 --aux 8-clip-avg1 --repeats 2 --json
if [ "$GPUS" -ge 2 ]; then
    step ddp2 60 "${LIGHTNING[@]}" --steps 4 --variants "" --ddp-equivalence --timeout 28
fi

"$PYTHON" - "$WORK" "$OUT" <<'PY'
"""One JSON summary: each step's exit status, its JSON output and its last error line;
and one log: each step's output, its last 64 KiB of each stream (a few hundred KiB in all)."""
import json
import sys
from pathlib import Path

import torch

work, out = Path(sys.argv[1]), Path(sys.argv[2])
TAIL = 64 * 1024
summary = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
           "steps": {}}
log = []
for rc in sorted(work.glob("*.rc")):
    name = rc.stem
    entry = {"exit": int(rc.read_text())}
    text = (work / f"{name}.out").read_text(errors="replace").strip()
    try:
        entry["result"] = json.loads(text.splitlines()[-1]) if text else None
    except (json.JSONDecodeError, IndexError):
        entry["result"] = None
    error_text = (work / f"{name}.err").read_text(errors="replace")
    errors = [line for line in error_text.splitlines() if line.strip()]
    log.append(f"===== {name}: exit {entry['exit']}\n--- stdout\n{text[-TAIL:]}\n--- stderr\n{error_text[-TAIL:]}\n")
    if entry["exit"] != 0 and errors:
        entry["last_error"] = errors[-1][-500:]
    summary["steps"][name] = entry
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out / "gpu_check.log").write_text("".join(log))
print(json.dumps({name: step["exit"] for name, step in summary["steps"].items()}))
PY
