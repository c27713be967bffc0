"""Training pairs per second and peak memory of T2CR training steps, per variant, measured in one run.

One training step: forward of `--pairs` query/exemplar pairs, the five-term `T2CRLoss`, backward, and
an Adam step over the paper's two parameter groups (`model.parameter_groups(1e-4, 1e-3)`). Variants:

  fp32           float32 weights and math (TF32 matmuls and convs on CUDA with the default
                 --fp32-math high; training's default is highest, trainer.matmul_precision)
  bf16           torch.autocast(bfloat16) around forward and loss, fp32 weights (Lightning "bf16-mixed")
  channels_last  `model.use_channels_last()`, in --channels-last-precision
  compile        `model.backbone.compile()` (torch.compile of the I3D), in --compile-precision; its first
                 (compiling) step is reported apart from the steady-state rate

Every variant runs in a fresh subprocess of this script (internal flag --_single VARIANT), so peak memory
is the variant's own (CUDA: torch.cuda.max_memory_allocated; CPU: growth of ru_maxrss over the process
footprint before the model is built) and compile caches and allocator state do not carry over. A variant
that fails (compile without a working C++ toolchain, out of memory, timeout) is reported as failed with
the first line of its error, and the others still run.

FLOPs of one step (forward + backward, not the optimizer) are counted with FlopCounterMode on the meta
device, so the figure exists on any machine; on CUDA they give the model FLOP utilisation against the
card's dense peak for the variant's math (H100 SXM / H200 and A100 known, else null).

Commands:
  CPU, small:      python experiments/bench/bench_train.py --size 56 --frames 32 --pairs 1 --steps 2 \
                       --variants fp32,bf16,channels_last
  CPU, compile:    python experiments/bench/bench_train.py --size 56 --frames 32 --pairs 1 --steps 2 \
                       --variants fp32,compile --timeout 300
  GPU, paper size: python experiments/bench/bench_train.py --size 112 --frames 103 --pairs 2 --json

With --frames 103 (16-frame clips, the default from 64 frames up) the clip plan is MTL-AQA's: the
default ClipConfig, M = 10 starts [0, 10, ..., 80, 86], N = 8 `8-clip-avg1`. Other frame counts get a
plan derived in `clip_config`: about the paper's clip density (10 clips per 103 frames), spread evenly,
N ~ 0.8 M avg1 auxiliary clips, 8-frame clips under 64 frames. The I3D weights are random (timing does
not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
from typing import Any

import torch

from t2cr.losses import T2CRLoss
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR, ClipConfig, T2CRConfig, build_clip_plans

VARIANTS = ("fp32", "bf16", "channels_last", "compile")
BACKBONE_LR, HEAD_LR = 1e-4, 1e-3  # Sec. 4.3

# Dense peak FLOP/s by math kind (vendor datasheets, no sparsity). Matched on substrings of
# torch.cuda.get_device_name(); the H100 PCIe / NVL have lower clocks, so they are left unknown. Kept here
# because Lightning's get_available_flops (2.6) does not recognise the plain name "NVIDIA H200" (it only
# knows "H200 SXM1" / "H200 NVL1"), the GPU this project's device checks run on.
PEAK_FLOPS: tuple[tuple[tuple[str, ...], dict[str, float]], ...] = (
    (("H200",), {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    (("H100", "SXM"), {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    (("H100", "HBM3"), {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    (("A100",), {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
)


def peak_flops(device_name: str, math: str) -> float | None:
    """Dense peak FLOP/s of a CUDA device for `math` (bf16 | tf32 | fp32), None when not known."""
    for needles, peaks in PEAK_FLOPS:
        if all(n in device_name for n in needles):
            return peaks.get(math)
    return None


def clip_config(frames: int, clip_length: int | None = None, base_clips: int | None = None) -> ClipConfig:
    """The MTL-AQA plan for 103 frames of 16-frame clips, else a valid plan derived from the frame count."""
    length = clip_length if clip_length is not None else (16 if frames >= 64 else 8)
    length = min(length, frames)
    if frames == 103 and length == 16 and base_clips in (None, 10):
        return ClipConfig()
    # about the paper's density of 10 clips per 103 frames; at least 2 so that an auxiliary path exists
    m = base_clips if base_clips is not None else min(10, max(2, round(10 * frames / 103)))
    if m < 2:
        raise ValueError("the two-path model needs at least 2 base clips (N < M auxiliary clips)")
    n = min(m - 1, max(1, round(0.8 * m)))  # 10 -> 8 as in the paper
    # base_starts=None: the model spreads overlapping starts evenly, as for FineDiving's 96 frames
    return ClipConfig(num_frames=frames, clip_length=length, num_base_clips=m, base_starts=None,
                      aux_strategy=f"{n}-clip-avg1")


def build_config(args: argparse.Namespace) -> T2CRConfig:
    return T2CRConfig(backbone=BackboneConfig(name="i3d", random_init=True),
                      clips=clip_config(args.frames, args.clip_length, args.base_clips),
                      num_action_types=args.classes)


def variant_precision(variant: str, args: argparse.Namespace) -> str:
    if variant == "bf16":
        return "bf16"
    if variant == "channels_last":
        return args.channels_last_precision
    if variant == "compile":
        return args.compile_precision
    return "fp32"


def set_fp32_math(mode: str) -> None:
    """TF32 for fp32 matmuls and convs ("high", as train.py) or exact fp32 for both ("highest")."""
    torch.set_float32_matmul_precision(mode)
    # the I3D is convolutions: cuDNN's own switch must follow, or "highest" would still run convs in TF32
    torch.backends.cudnn.allow_tf32 = mode != "highest"


def fp32_math_name(device: str, mode: str) -> str:
    return "tf32" if device == "cuda" and mode != "highest" else "fp32"


def count_step_flops(args: argparse.Namespace) -> int:
    """FLOPs of one training step's forward + backward, counted on the meta device (no memory, no compute).

    The same math runs in every variant (autocast and memory layout do not change the count). Attention
    is counted as the math path's bmm here; fused CPU/GPU attention kernels may be counted slightly
    differently, a negligible share next to the I3D's convolutions.
    """
    from pytorch_lightning.utilities import measure_flops

    with torch.device("meta"):
        model = T2CR(build_config(args)).train()
        criterion = T2CRLoss()
        query, exemplar, scores, labels = make_batch(args, torch.device("meta"))
        return int(measure_flops(model, lambda: model(query, exemplar),
                                 lambda outputs: criterion(outputs, *scores, *labels)["total"]))


def make_batch(args: argparse.Namespace, device: torch.device):
    shape = (args.pairs, 3, args.frames, args.size, args.size)
    query, exemplar = torch.randn(shape, device=device), torch.randn(shape, device=device)
    scores = torch.rand(args.pairs, device=device) * 10, torch.rand(args.pairs, device=device) * 10
    labels = (torch.randint(args.classes, (args.pairs,), device=device),
              torch.randint(args.classes, (args.pairs,), device=device))
    return query, exemplar, scores, labels


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _error_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run_single(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time `args.warmup` + `args.steps` training steps of one variant in this (fresh) process."""
    rss_before = _maxrss_mib()  # torch imported, nothing built: the CPU peak is measured from here
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_fp32_math(args.fp32_math)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.cuda.reset_peak_memory_stats()
    precision = variant_precision(variant, args)
    result: dict[str, Any] = {
        "variant": variant, "status": "failed", "precision": precision, "device": device.type,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "math": "bf16" if precision == "bf16" else fp32_math_name(device.type, args.fp32_math),
    }
    try:
        torch.manual_seed(0)
        model = T2CR(build_config(args)).to(device).train()
        if variant == "channels_last":
            model.use_channels_last()
        elif variant == "compile":
            model.backbone.compile()
        optimizer = torch.optim.Adam(model.parameter_groups(BACKBONE_LR, HEAD_LR))
        criterion = T2CRLoss()
        query, exemplar, scores, labels = make_batch(args, device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        losses: list[torch.Tensor] = []

        def step() -> float:
            sync()
            start = time.perf_counter()
            # autocast covers forward and loss only; backward and optimizer run outside it, as in Lightning
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                terms = criterion(model(query, exemplar), *scores, *labels)
            terms["total"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            losses.append(terms["total"].detach())
            return time.perf_counter() - start

        warmup = [step() for _ in range(args.warmup)]  # the first one compiles (compile) / autotunes
        times = [step() for _ in range(args.steps)]
        median = statistics.median(times)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = _maxrss_mib() - rss_before
        result.update({
            "status": "ok",
            "first_step_s": warmup[0],
            "warmup_s": warmup,
            "step_s": times,
            "s_per_step": median,
            "pairs_per_s": args.pairs / median,
            "peak_mem_mib": peak,
            # a non-finite loss flags a broken variant; JSON has no NaN, so it becomes null
            "loss_last": loss if math.isfinite(loss := float(losses[-1])) else None,
        })
    except Exception as exc:  # noqa: BLE001 - any failure of a variant is reported, not raised
        traceback.print_exc(file=sys.stderr)
        result["error"] = _error_line(exc)
    return result


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "cpu"


def _child_argv(variant: str, args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--_single", variant,
            "--size", str(args.size), "--frames", str(args.frames), "--pairs", str(args.pairs),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--classes", str(args.classes),
            "--channels-last-precision", args.channels_last_precision,
            "--compile-precision", args.compile_precision, "--fp32-math", args.fp32_math]
    for flag, value in (("--clip-length", args.clip_length), ("--base-clips", args.base_clips),
                        ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    if args.cudnn_benchmark:
        argv.append("--cudnn-benchmark")
    return argv


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant in a fresh subprocess; a crash, a kill or a timeout becomes a failed result."""
    started = time.perf_counter()
    # own session: on timeout the whole group goes, including inductor's compile workers
    proc = subprocess.Popen(_child_argv(variant, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a straggler outside the group still holds the pipes
            err = ""
        result = {"variant": variant, "status": "failed",
                  "error": f"timed out after {args.timeout} s (killed)"}
    else:
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            result = json.loads(lines[-1])
        else:
            why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            tail = [line for line in err.splitlines() if line.strip()]
            result = {"variant": variant, "status": "failed", "error": f"{why}: {tail[-1] if tail else ''}"}
    result["wall_s"] = time.perf_counter() - started
    result.setdefault("precision", variant_precision(variant, args))  # a dead child reported nothing
    if result["status"] != "ok" and err.strip():
        tail = "\n".join(err.strip().splitlines()[-15:])
        print(f"--- {variant} failed; last lines of its stderr:\n{tail}\n---", file=sys.stderr)
    return result


def summarise(args: argparse.Namespace, results: dict[str, dict[str, Any]], flops: int | None,
              flops_error: str | None, load: tuple[float, float] | None = None) -> dict[str, Any]:
    config = build_config(args)
    base, aux = build_clip_plans(config.clips)
    info = next((r for r in results.values() if "device" in r), {})
    device = info.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    for result in results.values():
        ok = result["status"] == "ok"
        result["achieved_tflops"] = flops / result["s_per_step"] / 1e12 if ok and flops else None
        peak = peak_flops(result.get("device_name", ""), result.get("math", "")) if device == "cuda" else None
        result["mfu"] = flops / result["s_per_step"] / peak if ok and flops and peak else None
    fp32 = results.get("fp32", {})
    for result in results.values():
        both = result["status"] == "ok" and fp32.get("status") == "ok"
        result["speed_vs_fp32"] = result["pairs_per_s"] / fp32["pairs_per_s"] if both else None
        result["memory_vs_fp32"] = result["peak_mem_mib"] / fp32["peak_mem_mib"] if both else None
    ok = {name: r for name, r in results.items() if r["status"] == "ok"}
    bf16 = results.get("bf16", {})
    return {
        "device": device,
        "device_name": info.get("device_name"),
        "threads": info.get("threads"),
        "torch": torch.__version__,
        "float32_matmul_precision": args.fp32_math,
        "fp32_math": fp32_math_name(device, args.fp32_math),
        "sizes": {
            "crop": args.size, "frames": args.frames, "pairs_per_step": args.pairs,
            "clip_length": base.length, "base_starts": list(base.starts),
            "aux_starts": list(aux.starts) if aux is not None else None,
            "aux_strategy": config.clips.aux_strategy,
            "clip_passes_per_step": 2 * args.pairs * (base.num_clips + (aux.num_clips if aux else 0)),
            "steps": args.steps, "warmup": args.warmup,
        },
        "flops_per_step": flops,
        "flops_per_pair": flops / args.pairs if flops else None,
        "flops_note": flops_error or "forward+backward on the meta device; the optimizer step is not counted",
        "load_avg_1m": list(load) if load is not None and device == "cpu" else None,
        "memory": ("torch.cuda.max_memory_allocated" if device == "cuda"
                   else "ru_maxrss growth over the process before the model was built"),
        "variants": results,
        "ratios": {name: r["speed_vs_fp32"] for name, r in results.items()},
        "ratio": (bf16["pairs_per_s"] / fp32["pairs_per_s"]
                  if bf16.get("status") == "ok" and fp32.get("status") == "ok" else None),
        "fastest": max(ok, key=lambda name: ok[name]["pairs_per_s"]) if ok else None,
    }


def _fmt(value: float | None, spec: str) -> str:
    """`format(value, spec)`, or a dash as wide as the spec asks for a missing figure."""
    if value is not None:
        return format(value, spec)
    digits = spec[: len(spec) - len(spec.lstrip("0123456789"))]
    return "-".rjust(int(digits or 0))


def print_report(summary: dict[str, Any]) -> None:
    s = summary["sizes"]
    print(f"T2CR training steps on {summary['device']} ({summary['device_name']}, "
          f"{summary['threads']} threads), torch {summary['torch']}")
    print(f"  {s['pairs_per_step']} pair(s)/step, crop {s['crop']}x{s['crop']}, {s['frames']} frames, "
          f"{s['clip_length']}-frame clips: base starts {s['base_starts']}, aux {s['aux_starts']} "
          f"({s['aux_strategy']}) -> {s['clip_passes_per_step']} I3D clip passes/step")
    print(f"  fp32 math: {summary['fp32_math']} "
          f"(float32_matmul_precision={summary['float32_matmul_precision']});"
          f" {s['warmup']} warm-up + {s['steps']} timed steps, median reported")
    flops = summary["flops_per_step"]
    print(f"  FLOPs per step {_fmt(flops, '.3e')}, "
          f"per training pair {_fmt(summary['flops_per_pair'], '.3e')} "
          f"({summary['flops_note']})")
    print(f"  peak memory: {summary['memory']}")
    load = summary["load_avg_1m"]
    if load is not None:
        busy = max(load) > (os.cpu_count() or 1)
        print(f"  1-min load average {load[0]:.1f} at start, {load[1]:.1f} at end, on {os.cpu_count()} cores"
              + (": other processes shared the CPU, the timings are noisy" if busy else ""))
    header = (f"{'variant':20s} {'status':7s} {'pairs/s':>9s} {'s/step':>8s} {'1st step s':>10s} "
              f"{'peak MiB':>9s} {'TFLOP/s':>8s} {'MFU':>6s} {'speed/fp32':>10s} {'mem/fp32':>8s}")
    print(header)
    for name, r in summary["variants"].items():
        label = f"{name}" + (f"[{r['precision']}]" if name in ("channels_last", "compile") else "")
        if r["status"] != "ok":
            print(f"{label:20s} {'FAILED':7s} {r.get('error', '')}")
            continue
        print(f"{label:20s} {'ok':7s} {r['pairs_per_s']:9.3f} {r['s_per_step']:8.3f} "
              f"{r['first_step_s']:10.2f} "
              f"{r['peak_mem_mib']:9.0f} {_fmt(r['achieved_tflops'], '8.3f')} {_fmt(r['mfu'], '6.1%')} "
              f"{_fmt(r['speed_vs_fp32'], '10.2f')} {_fmt(r['memory_vs_fp32'], '8.2f')}")
    compiled = summary["variants"].get("compile")
    if compiled and compiled["status"] == "ok":
        print(f"compile: first (compiling) step {compiled['first_step_s']:.1f} s, "
              f"steady state {compiled['s_per_step']:.3f} s/step")
    print(f"ratio bf16/fp32 pairs/s: {_fmt(summary['ratio'], '.3f')}")
    print(f"fastest: {summary['fastest'] or 'none (all variants failed)'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--size", type=int, default=112, help="crop height and width")
    parser.add_argument("--frames", type=int, default=103, help="frames per video")
    parser.add_argument("--clip-length", type=int, default=None,
                        help="frames per clip (16; 8 under 64 frames)")
    parser.add_argument("--base-clips", type=int, default=None, help="M (10 for 103 frames, else derived)")
    parser.add_argument("--pairs", type=int, default=2, help="query/exemplar pairs per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument("--classes", type=int, default=58, help="action types (MTL-AQA: 58)")
    parser.add_argument("--channels-last-precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile-precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--fp32-math", choices=("high", "highest"), default="high",
                        help="float32 matmul precision: high = TF32 on CUDA (trainer.matmul_precision=high), "
                             "highest = exact fp32")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning (on in training unless trainer.deterministic)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per variant before it is killed")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--_single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step is reported apart from the timed ones)")
    if args.steps < 1 or args.pairs < 1:
        parser.error("--steps and --pairs must be >= 1")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    try:
        build_clip_plans(build_config(args).clips)
    except ValueError as exc:
        parser.error(f"no valid clip plan for these sizes: {exc}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._single is not None:
        print(json.dumps(run_single(args._single, args)))
        return
    flops, flops_error = None, None
    try:
        flops = count_step_flops(args)
    except Exception as exc:  # noqa: BLE001 - the timings are still worth having without a FLOP count
        flops_error = f"FLOP count failed: {_error_line(exc)}"
    load_start = os.getloadavg()[0]
    results = {}
    for variant in args.variant_list:
        print(f"[bench_train] {variant} ...", file=sys.stderr, flush=True)
        results[variant] = run_variant(variant, args)
        r = results[variant]
        print(f"[bench_train] {variant}: {r['status']} in {r['wall_s']:.0f} s"
              + (f" ({r['error']})" if r["status"] != "ok" else ""), file=sys.stderr, flush=True)
    summary = summarise(args, results, flops, flops_error, (load_start, os.getloadavg()[0]))
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)


if __name__ == "__main__":
    main()
