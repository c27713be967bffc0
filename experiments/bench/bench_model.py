"""Parameter counts per module and forward+backward time of one training pair.

Example: python experiments/bench/bench_model.py --size 112 --repeats 2
The I3D weights are random here (timing does not depend on them); the clip plan is MTL-AQA's
(103 frames, M = 10 base clips, N = 8 auxiliary clips, 16 frames each).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from t2cr.losses import T2CRLoss
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR, T2CRConfig


def parameter_counts(model: T2CR) -> dict[str, int]:
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112, help="crop height and width")
    parser.add_argument("--frames", type=int, default=103)
    parser.add_argument("--pairs", type=int, default=1, help="pairs per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=58)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = T2CRConfig(backbone=BackboneConfig(name="i3d", random_init=True), num_action_types=args.classes)
    model = T2CR(config).train()
    criterion = T2CRLoss()
    shape = (args.pairs, 3, args.frames, args.size, args.size)
    query, exemplar = torch.randn(shape), torch.randn(shape)
    scores = torch.rand(args.pairs) * 10, torch.rand(args.pairs) * 10
    labels = torch.randint(args.classes, (args.pairs,)), torch.randint(args.classes, (args.pairs,))

    def step() -> float:
        start = time.perf_counter()
        terms = criterion(model(query, exemplar), *scores, *labels)
        terms["total"].backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()  # warm-up
    times = [step() for _ in range(args.repeats)]
    clip_passes = 2 * args.pairs * (model.base_plan.num_clips + model.aux_plan.num_clips)
    result = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "clip": f"16x{args.size}x{args.size}",
        "pairs": args.pairs,
        "clip_passes_per_step": clip_passes,
        "seconds_per_step_median": sorted(times)[len(times) // 2],
        "seconds_per_step_min": min(times),
        "parameters": parameter_counts(model),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"T2CR parameters by module ({result['clip']} clips, {args.classes} action types):")
    for name, count in result["parameters"].items():
        print(f"  {name:22s} {count:>12,d}")
    print(f"forward+backward of {args.pairs} training pair(s), {clip_passes} I3D clip passes, "
          f"{result['threads']} CPU threads: median {result['seconds_per_step_median']:.2f} s, "
          f"min {result['seconds_per_step_min']:.2f} s over {args.repeats} repeats")


if __name__ == "__main__":
    main()
