"""Dispatched aten operations of one T2CR training step, and Soft-DTW's share of them (CPU).

On a GPU every dispatched operation is at least one kernel launch plus host-side overhead, so the
count is a device-independent proxy for launch-bound work. One training step here is the forward of
`--pairs` query/exemplar pairs, the five-term `T2CRLoss`, backward and an Adam step over the paper's
two parameter groups, at the paper's clip layout (103 frames, M = 10 base clips starting at
[0, 10, ..., 80, 86], N = 8 `8-clip-avg1` auxiliary clips) with the real heads (d = 64, 8 heads,
3 decoder layers). The backbone is the `tiny` 3D CNN (default) or a randomly initialised I3D at a
small crop: the backbone changes the total, not the Soft-DTW share's absolute count.

Counting: a `TorchDispatchMode` sees every aten call below autograd (forward, backward and the
optimizer). A call is attributed to Soft-DTW when a frame of `t2cr/losses.py` whose qualified name
mentions soft_dtw / SoftDTW is on the Python stack when it is dispatched (the CPU autograd engine
runs backward functions on the calling thread, so the explicit backward is seen too). The first
`--warmup` steps (Adam's state creation) are not counted.

Command (seconds on a 2-core CPU):
    python experiments/bench/bench_dispatch.py
    python experiments/bench/bench_dispatch.py --backbone i3d --size 32 --top 15 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import t2cr.losses
from t2cr.losses import T2CRLoss
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR, ClipConfig, T2CRConfig, build_clip_plans

BACKBONE_LR, HEAD_LR = 1e-4, 1e-3  # Sec. 4.3
_LOSSES_FILE = os.path.realpath(t2cr.losses.__file__)


def _in_soft_dtw() -> bool:
    """Whether a Soft-DTW function of t2cr/losses.py is on the current Python stack."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if os.path.realpath(code.co_filename) == _LOSSES_FILE:
            name = code.co_qualname.lower()
            if "soft_dtw" in name or "softdtw" in name:
                return True
        frame = frame.f_back
    return False


class CountingMode(TorchDispatchMode):
    """Counts every dispatched operation, and separately those issued from inside Soft-DTW."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.soft_dtw_ops: Counter[str] = Counter()
        self.views = 0  # aliasing views (slice, view, t, detach, ...): metadata only, no kernel
        self.soft_dtw_views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        name = str(func.overloadpacket)
        self.ops[name] += 1
        self.views += func.is_view
        if _in_soft_dtw():
            self.soft_dtw_ops[name] += 1
            self.soft_dtw_views += func.is_view
        return func(*args, **(kwargs or {}))


def build(args: argparse.Namespace) -> tuple[T2CR, torch.optim.Optimizer, T2CRLoss, tuple]:
    torch.manual_seed(0)
    backbone = BackboneConfig(name=args.backbone, random_init=True)
    config = T2CRConfig(backbone=backbone, clips=ClipConfig(), num_action_types=args.classes)
    model = T2CR(config).train()
    optimizer = torch.optim.Adam(model.parameter_groups(BACKBONE_LR, HEAD_LR))
    shape = (args.pairs, 3, config.clips.num_frames, args.size, args.size)
    batch = (torch.randn(shape), torch.randn(shape), torch.rand(args.pairs) * 10, torch.rand(args.pairs) * 10,
             torch.randint(args.classes, (args.pairs,)), torch.randint(args.classes, (args.pairs,)))
    return model, optimizer, T2CRLoss(), batch


def count_step(args: argparse.Namespace) -> dict[str, Any]:
    model, optimizer, criterion, (query, exemplar, *targets) = build(args)

    def step() -> None:
        terms = criterion(model(query, exemplar), *targets)
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    with CountingMode() as mode:
        step()
    base, aux = build_clip_plans(model.config.clips)
    total, sdtw = sum(mode.ops.values()), sum(mode.soft_dtw_ops.values())
    return {
        "torch": torch.__version__,
        "backbone": args.backbone, "crop": args.size, "pairs": args.pairs,
        "base_clips": base.num_clips, "aux_clips": aux.num_clips if aux is not None else 0,
        "total_ops": total,
        "soft_dtw_ops": sdtw,
        "soft_dtw_share": sdtw / total if total else None,
        "total_non_view_ops": total - mode.views,
        "soft_dtw_non_view_ops": sdtw - mode.soft_dtw_views,
        "top_ops": mode.ops.most_common(args.top),
        "top_soft_dtw_ops": mode.soft_dtw_ops.most_common(args.top),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=("tiny", "i3d"), default="tiny")
    parser.add_argument("--size", type=int, default=None, help="crop (default: 16 for tiny, 32 for i3d)")
    parser.add_argument("--pairs", type=int, default=2, help="query/exemplar pairs per step (paper: 2)")
    parser.add_argument("--classes", type=int, default=58, help="action types (MTL-AQA: 58)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted steps first (Adam state)")
    parser.add_argument("--top", type=int, default=10, help="most frequent operations listed")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 16 if args.backbone == "tiny" else 32
    result = count_step(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"T2CR training step (forward + backward + Adam), torch {result['torch']}, CPU: "
          f"{result['backbone']} backbone at {result['crop']}x{result['crop']}, {result['pairs']} pairs, "
          f"M = {result['base_clips']}, N = {result['aux_clips']}")
    print(f"dispatched operations: {result['total_ops']}")
    print(f"  inside soft_dtw:     {result['soft_dtw_ops']} ({result['soft_dtw_share']:.1%})")
    print(f"without views (metadata-only aliasing ops): {result['total_non_view_ops']}, "
          f"inside soft_dtw {result['soft_dtw_non_view_ops']}")
    print("most frequent (all): " + ", ".join(f"{n} {c}" for n, c in result["top_ops"]))
    print("most frequent (soft_dtw): " + ", ".join(f"{n} {c}" for n, c in result["top_soft_dtw_ops"]))


if __name__ == "__main__":
    main()
