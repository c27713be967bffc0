import pytest
import torch

from t2cr.models.clips import ClipPlan, aux_clip_plan, base_clip_starts, parse_aux_strategy
from t2cr.models.t2cr import MTL_AQA_BASE_STARTS

# Table 10 of the paper, 103 frames, base [0, 10, ..., 80, 86]
TABLE10 = {
    "8-clip-same": ([10, 20, 30, 40, 50, 60, 70, 80], 1),
    "8-clip-avg1": ([0, 12, 24, 36, 48, 60, 72, 84], 1),
    "8-clip-avg2": ([0, 12, 24, 36, 49, 61, 73, 86], 1),
}


@pytest.mark.parametrize("name", sorted(TABLE10))
def test_table10_strategies_match_the_paper(name):
    n, kind = parse_aux_strategy(name)
    plan = aux_clip_plan(kind, n, MTL_AQA_BASE_STARTS, 103)
    assert list(plan.starts) == TABLE10[name][0]
    assert plan.stride == TABLE10[name][1]


def test_10_clip_2x_uses_double_stride_within_the_video():
    plan = aux_clip_plan("2x", 10, MTL_AQA_BASE_STARTS, 103)
    assert plan.num_clips == 10 and plan.stride == 2
    assert plan.starts[0] == 0 and plan.frames_needed == 103  # last clip ends on the last frame
    idx = plan.frame_indices()
    assert idx.shape == (10, 16) and torch.equal(idx[0], torch.arange(0, 32, 2))


def test_base_starts_derived_from_frame_count():
    assert base_clip_starts(96, 9) == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # FineDiving
    assert base_clip_starts(160, 10, overlapping=False) == list(range(0, 160, 16))  # JIGSAWS
    with pytest.raises(ValueError, match="needs 176 frames"):
        base_clip_starts(160, 11, overlapping=False)


def test_aux_avg1_never_runs_past_the_last_base_start():
    base = list(range(0, 160, 16))  # last start 144; 144 / 7 = 20.6 rounds to 21 -> 147 would overflow
    plan = aux_clip_plan("avg1", 8, base, 160)
    assert max(plan.starts) <= 144 and plan.frames_needed <= 160


def test_aux_plans_fit_finediving_frames():
    base = base_clip_starts(96, 9)
    for kind in ("same", "avg1", "avg2", "2x"):
        plan = aux_clip_plan(kind, 8, base, 96)
        assert plan.frames_needed <= 96, kind


def test_bad_plans_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="unknown auxiliary sampling strategy"):
        parse_aux_strategy("8-clips-avg")
    with pytest.raises(ValueError, match="needs 119 frames but the video has 103"):
        ClipPlan((0, 103 - 16 + 16)).check_fits(103)
    with pytest.raises(ValueError, match=">= 0"):
        ClipPlan((-1,))
