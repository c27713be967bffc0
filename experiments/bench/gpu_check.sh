#!/usr/bin/env bash
# One prepared GPU check (issue 20): everything a session with an accelerator should measure, in <= 8 minutes
# on one GPU (a 2-GPU DDP run when two exist), with one JSON summary at the end.
#
#   bash experiments/bench/gpu_check.sh            # writes into $OUT (the device tool's folder) or /tmp/t2cr_gpu_check
#
# Steps (each bounded by `timeout`, each one's output kept in its own file, a failed step does not stop the rest):
#   bench_train   training step at the paper's size (103 frames, 16 x 112 x 112 clips, M = 10, N = 8, I3D, 2 pairs):
#                 fp32 / bf16-mixed / channels-last, pairs per second, peak memory, MFU with the GPU's name
#   bench_eval    clip passes and time of the K-exemplar evaluation (features once vs per pair)
#   bench_data    loader throughput with 8 workers (the GPU's feed)
#   softdtw       the CUDA Soft-DTW path against the CPU reference (when t2cr.losses has a self-check)
#   smoke_bf16    `t2cr-train experiment=smoke` for 2 epochs on the GPU in bf16-mixed
#   deterministic the same for 1 epoch with trainer.deterministic=true (the exact-resume recipe on CUDA)
#   ddp2          the smoke run on 2 GPUs with trainer=ddp (only when two GPUs exist)
# On a machine without a GPU it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/t2cr_gpu_check}
mkdir -p "$OUT"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch on this machine; nothing to measure"
    exit 0
fi
if ! "$PYTHON" -c "import t2cr" 2>/dev/null; then
    # the GPU machine keeps its own CUDA torch: install only this package, not its pinned dependencies
    "$PYTHON" -m pip install -q --no-deps -e . || echo "gpu_check: could not install t2cr" >&2
fi
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
export PYTHONWARNINGS=ignore WANDB_MODE=disabled
echo "gpu_check: $GPUS GPU(s): $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))"), results in $OUT"

step() {  # step NAME SECONDS COMMAND...: run, keep stdout/stderr and the exit status
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo $? > "$OUT/$name.rc"
    echo "gpu_check: $name exit $(cat "$OUT/$name.rc") in $((SECONDS - start)) s"
}

SMOKE=(experiment=smoke logger=csv callbacks.progress=none trainer=gpu trainer.devices=1 data.num_workers=4
       data.synthetic.root="$OUT/synthetic_smoke" data.cache_dir="$OUT/frame_cache_smoke")  # GPU runs read the cache
step bench_train 150 "$PYTHON" experiments/bench/bench_train.py --size 112 --frames 103 --pairs 2 --steps 5 \
    --variants fp32,bf16,channels_last --fp32-math highest --json
step bench_eval 120 "$PYTHON" experiments/bench/bench_eval.py --size 112 --frames 103 --clip-length 16 \
    --base-clips 10 --aux 8-clip-avg1 --repeats 2 --json
step bench_data 60 "$PYTHON" experiments/bench/bench_data.py --root "$OUT/bench_data" --videos 16 --workers 8 \
    --batches 30 --json
step softdtw 30 "$PYTHON" -c "
import json, t2cr.losses as L
check = getattr(L, 'soft_dtw_cuda_selfcheck', None)
print(json.dumps({'max_abs_diff_vs_cpu': None if check is None else float(check())}))"
step smoke_bf16 150 "$PYTHON" -m t2cr.cli.train "${SMOKE[@]}" trainer.precision=bf16-mixed trainer.max_epochs=2 \
    trainer.check_val_every_n_epoch=1 hydra.run.dir="$OUT/smoke_bf16"
step deterministic 90 "$PYTHON" -m t2cr.cli.train "${SMOKE[@]}" trainer.deterministic=true trainer.max_epochs=1 \
    test_best=false hydra.run.dir="$OUT/deterministic"
if [ "$GPUS" -ge 2 ]; then
    step ddp2 120 "$PYTHON" -m t2cr.cli.train "${SMOKE[@]}" trainer=ddp trainer.devices=2 trainer.max_epochs=2 \
        test_best=false hydra.run.dir="$OUT/ddp2"
fi

"$PYTHON" - "$OUT" <<'PY'
"""One JSON summary: each step's exit status, its JSON output or the metrics of its run, and its last error line."""
import json
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
summary = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
           "steps": {}}
for rc in sorted(out.glob("*.rc")):
    name = rc.stem
    entry = {"exit": int(rc.read_text())}
    text = (out / f"{name}.out").read_text().strip()
    try:
        entry["result"] = json.loads(text.splitlines()[-1]) if text else None
    except (json.JSONDecodeError, IndexError):
        entry["result"] = None
    metrics = out / name / "metrics.json"
    if metrics.is_file():
        entry["metrics"] = json.loads(metrics.read_text())
    errors = [line for line in (out / f"{name}.err").read_text().splitlines() if line.strip()]
    if entry["exit"] != 0 and errors:
        entry["last_error"] = errors[-1][-500:]
    summary["steps"][name] = entry
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({name: step["exit"] for name, step in summary["steps"].items()}))
PY
