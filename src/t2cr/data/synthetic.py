"""The embedded default dataset: synthetic platform dives in MTL-AQA's layout.

A new user's first training run needs data that looks like the task, is learnable by a small video
model trained from scratch on a laptop CPU, and costs no download. This module renders it.

Each sample is one dive seen from the side: a platform at the top left, water at the bottom, and a
figure (a capsule body with a yellow head, so that its orientation is visible) that takes off, flies
on a parabola while somersaulting, comes out of the somersault and enters the water with a splash.

* The action type (dive number) fixes the number of somersaults, their direction, the body position
  (tuck or pike) and the degree of difficulty (DD); see `ACTION_TYPES`.
* The execution depends on the motion only: (a) the steadiness of the somersaults (irregular angular
  speed, a wobble, and a tuck / pike held open), (b) the deviation of the body from vertical at the
  entry, which also throws a flat sheet of water to the feet's side, (c) the size of the splash. Each
  error is drawn uniformly in [0, 1], independently of the action type, so execution varies as widely
  inside each DD pool as over the whole dataset:

      execution = 9.8 - 1.8 * steadiness_error - 2.4 * entry_error - 2.8 * splash_error   (in [2.8, 9.8])

* `num_judges` judges score `clip(round_half(execution + judge bias + noise), 0, 10)` (bias sd 0.15
  per judge, noise sd 0.35 per score); as in MTL-AQA, final_score = DD * (sum of the middle three
  judges' scores after the highest and lowest (num_judges - 3) / 2 are dropped).
* Every error stays visible at the default run's small scale (32 frames of 32 x 32 pixels; version 3
  of the generator):
  - the figure is a quarter of the frame's height long;
  - the somersaults end at 76 % of the flight and the entry angle is complete at 80 %, so the body
    holds that angle for the last fifth of the flight and through the entry (with 32 frames: 4.5
    frames of flight on average instead of 2.4 in version 2, 9.3 counting those entering the water
    instead of 6.6);
  - the angle reaches 50 degrees (was 40) and throws a sheet of water up to 0.3 of the frame's width;
  - the wobble stops with the somersaults, so that it does not blur that angle;
  - the open position makes the figure longer in every frame of the somersaults: an irregular angular
    speed alone is lost between frames that rotate by up to 90 degrees.
* Nuisances that do not enter the score: a per-event and per-dive background tint, the body colour
  shade, a horizontal camera offset, the take-off time, the flight duration, the horizontal travel and
  the height of the jump.

Layout under `root` (MTL-AQA's, so that the MTL-AQA reader serves it):

    annotations/final_annotations_dict_with_dive_number.pkl   {(event, idx): {...}}
    annotations/train_split_0.pkl, annotations/test_split_0.pkl   [(event, idx), ...]
    frames/{event:02d}/{frame:06d}.jpg   every frame of an event from frame 0: gap_frames frames of
                                         empty pool, then each dive followed by gap_frames frames of
                                         empty pool (so a reader may shift a window past a dive's ends)
    synthetic_truth.json                 the hidden generating variables of every sample
    manifest.json                        config, file sizes and content hash (written last)

`ensure_synthetic_dataset(config)` generates it once; the same config always gives byte-identical
files (fixed seeds, fixed JPEG encoder settings).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2cr.data.config import SyntheticConfig
from t2cr.data.packaged import load_pickle
from t2cr.io import atomic_directory, file_lock, read_json, remove_temporaries

FRAME_PATTERN = "{event:02d}/{frame:06d}.jpg"
ANNOTATIONS_DIR = "annotations"
FRAMES_DIR = "frames"
ANNOTATIONS_FILE = "final_annotations_dict_with_dive_number.pkl"
TRAIN_SPLIT_FILE = "train_split_0.pkl"
TEST_SPLIT_FILE = "test_split_0.pkl"
TRUTH_FILE = "synthetic_truth.json"
MANIFEST_FILE = "manifest.json"
GENERATOR = "t2cr.data.synthetic"
# bump whenever the rendering or the score model changes, so that stale datasets are regenerated
GENERATOR_VERSION = 3
PICKLE_PROTOCOL = 4

# MTL-AQA's class codes: position is the dive number's letter (A straight, B pike, C tuck, D free)
POSITIONS = ("straight", "pike", "tuck", "free")


@dataclass(frozen=True)
class ActionType:
    """One rotation scheme: a dive number, its somersaults and its degree of difficulty."""

    dive_number: str
    rotations: float  # somersaults; n + 0.5 so that a head-up take-off ends head-down
    difficulty: float
    direction: int  # +1 forward (clockwise on screen, away from the platform), -1 back

    @property
    def rotation_type(self) -> int:
        return int(self.dive_number[0]) - 1

    @property
    def position(self) -> int:
        return "ABCD".index(self.dive_number[-1])

    @property
    def ss_no(self) -> int:
        """Half somersaults, the dive number's last digit."""
        return int(self.dive_number[-2])


ACTION_TYPES: tuple[ActionType, ...] = (
    ActionType("101B", 0.5, 1.6, +1),
    ActionType("103B", 1.5, 2.0, +1),
    ActionType("105C", 2.5, 2.4, +1),
    ActionType("205C", 2.5, 2.8, -1),
    ActionType("107C", 3.5, 3.2, +1),
    ActionType("207C", 3.5, 3.6, -1),
)

# score model (see the module docstring)
EXECUTION_BASE = 9.8
PENALTY_STEADINESS = 1.8
PENALTY_ENTRY = 2.4
PENALTY_SPLASH = 2.8
JUDGE_BIAS_SD = 0.15
JUDGE_NOISE_SD = 0.35

# scene geometry: x in units of the width, y and sizes in units of the height
_WATER_Y = 0.84
_PLATFORM_TOP = 0.36
_PLATFORM_EDGE = 0.30
_PLATFORM_THICK = 0.035
_TOWER_X = 0.07
_BODY_LEN = 0.25
_BODY_R = 0.045
_HEAD_R = 0.055
_MAX_ENTRY_DEG = 50.0
_MAX_WOBBLE_DEG = 30.0
_ROT_START, _ROT_END = 0.04, 0.76  # part of the flight (0 take-off, 1 entry) spent somersaulting
_TILT_START, _TILT_END = 0.5, 0.8  # the entry angle builds up here and is held to (and through) the entry
_MAX_OPENING = 0.8  # an unsteady diver's tuck / pike is held open by up to this part of the way to straight
_COMPACTION = {"tuck": 0.55, "pike": 0.7, "straight": 1.0, "free": 0.8}

_WALL_TOP = np.array([120.0, 135.0, 160.0])
_WALL_BOTTOM = np.array([165.0, 175.0, 190.0])
_TOWER = np.array([85.0, 85.0, 95.0])
_SLAB = np.array([210.0, 205.0, 195.0])
_WATER = np.array([30.0, 100.0, 170.0])
_BODY = np.array([210.0, 60.0, 50.0])
_HEAD = np.array([250.0, 220.0, 70.0])
_SPLASH = np.array([235.0, 242.0, 250.0])


@dataclass
class SyntheticAnnotations:
    """Everything about a dataset except its frames; cheap to compute."""

    annotations: dict[tuple[int, int], dict[str, Any]]
    train_split: list[tuple[int, int]]
    test_split: list[tuple[int, int]]
    truth: dict[str, dict[str, Any]]  # "event_idx" -> generating variables
    event_lengths: dict[int, int]  # event -> number of frames of its continuous sequence


def truth_key(event: int, idx: int) -> str:
    return f"{event}_{idx}"


def _round_half(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x) * 2.0 + 0.5) / 2.0


def middle_three_sum(judge_scores: list[float]) -> float:
    """Sum of the middle three scores after dropping equally many of the highest and lowest."""
    ordered = sorted(judge_scores)
    drop = (len(ordered) - 3) // 2
    return float(sum(ordered[drop:drop + 3]))


def _r6(x: float) -> float:
    return round(float(x), 6)


def make_annotations(config: SyntheticConfig) -> SyntheticAnnotations:
    """Annotations, splits and hidden truth of `config`'s dataset, without rendering a frame."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xD1FE]))
    num_types = len(ACTION_TYPES)
    # types balanced within each split, so that every DD pool of the training split is populated
    train_types = rng.permutation(np.arange(config.num_train) % num_types)
    test_types = rng.permutation(np.arange(config.num_test) % num_types)
    pool = [(int(t), "train") for t in train_types] + [(int(t), "test") for t in test_types]
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]

    judge_bias = rng.normal(0.0, JUDGE_BIAS_SD, size=config.num_judges)
    event_tints = rng.normal(0.0, 10.0, size=(config.num_events, 3)).clip(-25, 25)
    base, extra = divmod(config.num_samples, config.num_events)
    step = config.frames_per_dive + config.gap_frames
    T = config.frames_per_dive

    annotations: dict[tuple[int, int], dict[str, Any]] = {}
    truth: dict[str, dict[str, Any]] = {}
    train_split: list[tuple[int, int]] = []
    test_split: list[tuple[int, int]] = []
    event_lengths: dict[int, int] = {}
    position = 0
    for e in range(config.num_events):
        event = e + 1
        count = base + (1 if e < extra else 0)
        event_lengths[event] = count * T + (count + 1) * config.gap_frames
        for k in range(count):
            idx = k + 1
            type_index, split = pool[position]
            position += 1
            action = ACTION_TYPES[type_index]
            steadiness_error = _r6(rng.uniform())
            entry_error = _r6(rng.uniform())
            splash_error = _r6(rng.uniform())
            entry_sign = 1.0 if rng.uniform() < 0.5 else -1.0
            tint = (event_tints[e] + rng.normal(0.0, 5.0, size=3).clip(-12, 12)).round(3)
            takeoff = round(T * float(rng.uniform(0.06, 0.15)))
            flight = round(T * float(rng.uniform(0.55, 0.62)))
            nuisance = {
                "tint": [float(v) for v in tint],
                "body_shade": _r6(rng.uniform(0.8, 1.1)),
                "x_offset": _r6(rng.uniform(-0.05, 0.05)),
                "travel": _r6(rng.uniform(0.20, 0.30)),
                "rise": _r6(rng.uniform(0.05, 0.12)),
            }
            render_seed = int(rng.integers(0, 2**31 - 1))
            penalties = {
                "steadiness": PENALTY_STEADINESS * steadiness_error,
                "entry": PENALTY_ENTRY * entry_error,
                "splash": PENALTY_SPLASH * splash_error,
            }
            execution = EXECUTION_BASE - sum(penalties.values())
            raw = execution + judge_bias + rng.normal(0.0, JUDGE_NOISE_SD, size=config.num_judges)
            judges = [float(v) for v in np.clip(_round_half(raw), 0.0, 10.0)]
            middle = middle_three_sum(judges)
            final_score = round(action.difficulty * middle * config.score_scale, 2)
            start = config.gap_frames + k * step
            annotations[(event, idx)] = {
                "final_score": float(final_score),
                "difficulty": float(action.difficulty),
                "judge_scores": judges,
                "dive_number": action.dive_number,
                "start_frame": start,
                "end_frame": start + T - 1,
                "primary_view": 0,  # one side view
                "position": action.position,
                "armstand": 0,
                "rotation_type": action.rotation_type,
                "ss_no": action.ss_no,
                "tw_no": 0,
            }
            (train_split if split == "train" else test_split).append((event, idx))
            truth[truth_key(event, idx)] = {
                "event": event,
                "idx": idx,
                "split": split,
                "action_type": type_index,
                "dive_number": action.dive_number,
                "difficulty": float(action.difficulty),
                "rotations": float(action.rotations),
                "direction": action.direction,
                "position": POSITIONS[action.position],
                "execution": _r6(execution),
                "judged_execution": _r6(middle / 3.0),
                "execution_components": {
                    "steadiness_error": steadiness_error,
                    "entry_error": entry_error,
                    "splash_error": splash_error,
                    "steadiness_penalty": _r6(penalties["steadiness"]),
                    "entry_penalty": _r6(penalties["entry"]),
                    "splash_penalty": _r6(penalties["splash"]),
                },
                "entry_angle_deg": _r6(entry_sign * entry_error * _MAX_ENTRY_DEG),
                "splash_size": _r6(0.15 + 0.85 * splash_error),
                "wobble_deg": _r6(steadiness_error * _MAX_WOBBLE_DEG),
                "timing": {"takeoff_frame": takeoff, "flight_frames": flight, "entry_frame": takeoff + flight},
                "nuisance": nuisance,
                "render_seed": render_seed,
            }
    return SyntheticAnnotations(annotations, sorted(train_split), sorted(test_split), truth, event_lengths)


# ----------------------------------------------------------------------------------------------
# rendering


class _Canvas:
    """Pixel-centre grids of an H x W frame and soft-edged shape coverages on them."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.y = (np.arange(height, dtype=np.float64) + 0.5)[:, None]
        self.x = (np.arange(width, dtype=np.float64) + 0.5)[None, :]
        self.rows = np.arange(height, dtype=np.float64) + 0.5

    def px(self, x: float, y: float) -> tuple[float, float]:
        return x * self.w, y * self.h

    @staticmethod
    def coverage(distance: np.ndarray) -> np.ndarray:
        """Signed distance (pixels, negative inside) -> anti-aliased coverage in [0, 1]."""
        return np.clip(0.5 - distance, 0.0, 1.0)

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> np.ndarray:
        ax, ay = p1[0] - p0[0], p1[1] - p0[1]
        dx, dy = self.x - p0[0], self.y - p0[1]
        denom = ax * ax + ay * ay
        t = np.clip((dx * ax + dy * ay) / denom, 0.0, 1.0) if denom > 1e-12 else np.zeros_like(dx * dy)
        return self.coverage(np.hypot(dx - t * ax, dy - t * ay) - radius)

    def disc(self, c: tuple[float, float], radius: float) -> np.ndarray:
        return self.coverage(np.hypot(self.x - c[0], self.y - c[1]) - radius)

    def ellipse(self, c: tuple[float, float], rx: float, ry: float) -> np.ndarray:
        q = np.sqrt(((self.x - c[0]) / rx) ** 2 + ((self.y - c[1]) / ry) ** 2)
        return self.coverage((q - 1.0) * min(rx, ry))


def _blend(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    a = alpha[..., None]
    image *= 1.0 - a
    image += a * colour


def _background(canvas: _Canvas, tint: np.ndarray, x_offset: float) -> np.ndarray:
    """Wall, tower, platform and still water (waves are added per frame)."""
    h, w = canvas.h, canvas.w
    ramp = (canvas.rows / h)[:, None, None]
    image = np.broadcast_to(_WALL_TOP + (_WALL_BOTTOM - _WALL_TOP) * ramp + tint, (h, w, 3)).copy()
    water_px = _WATER_Y * h
    top_px = _PLATFORM_TOP * h
    ox = x_offset * w
    tower = canvas.coverage(np.maximum(canvas.x - (_TOWER_X * w + ox), top_px - canvas.y))
    _blend(image, tower, _TOWER + 0.5 * tint)
    slab_dist = np.maximum(canvas.x - (_PLATFORM_EDGE * w + ox),
                           np.abs(canvas.y - (top_px + 0.5 * _PLATFORM_THICK * h)) - 0.5 * _PLATFORM_THICK * h)
    _blend(image, canvas.coverage(slab_dist), _SLAB + 0.5 * tint)
    water = canvas.coverage(water_px - canvas.y)
    _blend(image, np.broadcast_to(water, (h, w)), _WATER + tint)
    return image


def _waves(canvas: _Canvas, frame: int, phase: float) -> np.ndarray:
    """Per-row brightness of the moving water surface texture, (H, 1, 1)."""
    rows = canvas.rows
    below = np.clip(rows - _WATER_Y * canvas.h + 0.5, 0.0, 1.0)
    wave = 6.0 * np.sin(2.0 * np.pi * (rows / max(3.0, canvas.h / 10.0) - 0.08 * frame) + phase)
    return (below * wave)[:, None, None]


def _trapezoid_progress(x: np.ndarray, ramp: float = 0.15) -> np.ndarray:
    """Rotation progress in [0, 1] for a speed that ramps up, stays constant and ramps down."""
    x = np.clip(x, 0.0, 1.0)
    up = x * x / (2 * ramp)
    mid = ramp / 2 + (x - ramp)
    down = (1 - ramp) - (1 - x) ** 2 / (2 * ramp)
    return np.where(x < ramp, up, np.where(x < 1 - ramp, mid, down)) / (1 - ramp)


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class _DivePlan:
    """Per-frame state of one dive: centre (normalised), orientation (degrees), body compaction."""

    cx: np.ndarray
    cy: np.ndarray
    phi: np.ndarray
    compaction: np.ndarray
    entry_frame: int
    entry_x: float
    slap: float  # entry angle / its maximum: the sheet of water an entry off vertical throws to the feet's side
    droplets: np.ndarray  # (n, 2): horizontal and vertical launch speeds


def _plan_dive(config: SyntheticConfig, truth: dict[str, Any]) -> _DivePlan:
    T = config.frames_per_dive
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, truth["render_seed"]]))
    timing, nuisance = truth["timing"], truth["nuisance"]
    t0, flight = timing["takeoff_frame"], timing["flight_frames"]
    jitter = truth["execution_components"]["steadiness_error"]
    frames = np.arange(T, dtype=np.float64)
    u = np.maximum(frames - t0, 0.0) / flight  # 0 before take-off, 1 at the entry

    # somersault progress with irregular angular speed: jittered per-frame increments, same total
    uk = np.arange(flight + 1) / flight
    base = _trapezoid_progress((uk - _ROT_START) / (_ROT_END - _ROT_START))
    steps = np.diff(base)
    speed = np.clip(1.0 + 1.1 * jitter * rng.uniform(-1.0, 1.0, size=flight), 0.15, 1.9)
    steps = steps * speed
    progress_k = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
    k = np.clip(frames - t0, 0, flight).astype(int)
    progress = progress_k[k]

    f1, f2 = rng.uniform(2.0, 4.0), rng.uniform(4.0, 7.0)
    p1, p2 = rng.uniform(0.0, 2 * np.pi, size=2)
    window = np.sin(np.pi * np.clip(u / _ROT_END, 0.0, 1.0))  # while somersaulting: the line-up is still
    wobble = (jitter * _MAX_WOBBLE_DEG * window
              * (np.sin(2 * np.pi * f1 * u + p1) + 0.5 * np.sin(2 * np.pi * f2 * u + p2)) / 1.5)
    tilt = truth["entry_angle_deg"] * _smoothstep((u - _TILT_START) / (_TILT_END - _TILT_START))
    phi = truth["direction"] * 360.0 * truth["rotations"] * progress + wobble + tilt

    tight = _COMPACTION[truth["position"]]
    fold = _smoothstep(u / 0.12) * (1.0 - _smoothstep((u - 0.62) / 0.14))
    # an unsteady somersault is also a loose one: the tuck / pike is held open (and not evenly), which shows
    # in every frame as the figure's length, not only in the angle from one frame to the next
    opening = jitter * _MAX_OPENING * rng.uniform(0.7, 1.0, size=T)
    compaction = 1.0 - (1.0 - tight) * fold * (1.0 - opening)

    x0 = _PLATFORM_EDGE + nuisance["x_offset"] - 0.02
    y0 = _PLATFORM_TOP - _BODY_LEN / 2
    x1 = x0 + nuisance["travel"]
    y1 = _WATER_Y - 0.3 * _BODY_LEN
    rise = nuisance["rise"]
    uf = np.minimum(u, 1.0)
    cx = x0 + (x1 - x0) * uf
    cy = y0 + (y1 - y0) * uf - 4.0 * rise * uf * (1.0 - uf)
    cy = cy + ((y1 - y0) + 4.0 * rise) * np.maximum(u - 1.0, 0.0)  # keeps falling below the surface

    size = truth["splash_size"]
    n_drops = 2 + round(8 * size)
    droplets = np.stack([rng.uniform(-1.0, 1.0, n_drops) * 0.10 * size,
                         rng.uniform(0.6, 1.0, n_drops) * 0.35 * size], axis=1)
    slap = truth["entry_angle_deg"] / _MAX_ENTRY_DEG
    return _DivePlan(cx, cy, phi, compaction, t0 + flight, float(x1), slap, droplets)


def _draw_figure(image: np.ndarray, canvas: _Canvas, cx: float, cy: float, phi: float, compaction: float,
                 body: np.ndarray) -> None:
    h = canvas.h
    c = canvas.px(cx, cy)
    half = 0.5 * _BODY_LEN * compaction * h
    angle = math.radians(phi)
    ux, uy = math.sin(angle), -math.cos(angle)  # towards the head; phi = 0 is head up
    head = (c[0] + ux * half, c[1] + uy * half)
    feet = (c[0] - ux * half, c[1] - uy * half)
    above = np.clip(_WATER_Y * h - canvas.y + 0.5, 0.0, 1.0)  # the water hides what is under it
    _blend(image, canvas.capsule(feet, head, _BODY_R * h) * above, body)
    _blend(image, canvas.disc(head, _HEAD_R * h) * above, _HEAD)


def _draw_splash(image: np.ndarray, canvas: _Canvas, plan: _DivePlan, frame: int, size: float, T: int) -> None:
    tau = frame - plan.entry_frame
    if tau < 0:
        return
    h, w = canvas.h, canvas.w
    water_px = _WATER_Y * h
    ex = plan.entry_x * w
    above = np.clip(water_px - canvas.y + 0.5, 0.0, 1.0)
    below = 1.0 - above
    # foam on the surface, fading slowly
    foam_alpha = 0.75 * math.sqrt(size) * math.exp(-tau / (0.2 * T))
    foam = canvas.ellipse((ex, water_px), (0.04 + 0.12 * size) * w, 0.035 * h) * below
    _blend(image, foam * foam_alpha, _SPLASH)
    # an entry off vertical slaps the water: a flat sheet thrown to the feet's side, as long as the angle
    # is large, fading like the foam (independent of the splash size)
    if plan.slap:
        length = 0.3 * abs(plan.slap) * w
        side = math.copysign(1.0, plan.slap)
        sheet = canvas.ellipse((ex + side * 0.5 * length, water_px - 0.015 * h), max(0.6, 0.5 * length),
                               max(0.6, 0.04 * h))
        _blend(image, sheet * 0.9 * math.exp(-tau / (0.2 * T)), _SPLASH)
    # the plume: rises within a few frames, then collapses
    x = (tau + 1.0) / max(1.0, 0.07 * T)
    envelope = x * math.exp(1.0 - x)
    if envelope > 0.02:
        rx = max(0.6, (0.03 + 0.07 * size) * math.sqrt(envelope) * w)
        ry = max(0.6, 0.28 * size * envelope * h)
        plume = canvas.ellipse((ex, water_px), rx, ry) * above
        _blend(image, plume * 0.9, _SPLASH)
    # droplets on parabolas that land back within ~0.22 T frames
    s = tau / (0.22 * T)
    if 0.0 < s < 1.0:
        xs = ex + plan.droplets[:, 0] * s * w
        ys = water_px - plan.droplets[:, 1] * 4.0 * s * (1.0 - s) * h
        dist = np.hypot(canvas.x[None] - xs[:, None, None], canvas.y[None] - ys[:, None, None]).min(axis=0)
        _blend(image, canvas.coverage(dist - 0.018 * h) * above * 0.9, _SPLASH)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_dive(config: SyntheticConfig, truth: dict[str, Any], first_frame: int = 0) -> np.ndarray:
    """The frames of one dive, (frames_per_dive, height, width, 3) uint8 RGB.

    `truth` is the sample's entry of `make_annotations(config).truth`; `first_frame` is its start in
    the event's sequence (it only moves the water texture).
    """
    canvas = _Canvas(config.height, config.width)
    nuisance = truth["nuisance"]
    tint = np.asarray(nuisance["tint"], dtype=np.float64)
    background = _background(canvas, tint, nuisance["x_offset"])
    body = np.clip(_BODY * nuisance["body_shade"], 0, 255)
    plan = _plan_dive(config, truth)
    phase = _event_phase(config, truth["event"])
    out = np.empty((config.frames_per_dive, config.height, config.width, 3), dtype=np.uint8)
    for t in range(config.frames_per_dive):
        image = background + _waves(canvas, first_frame + t, phase)
        if plan.cy[t] - 0.5 * _BODY_LEN < _WATER_Y + 0.02:  # until fully under water
            _draw_figure(image, canvas, plan.cx[t], plan.cy[t], plan.phi[t], plan.compaction[t], body)
        _draw_splash(image, canvas, plan, t, truth["splash_size"], config.frames_per_dive)
        out[t] = _to_uint8(image)
    return out


def _event_phase(config: SyntheticConfig, event: int) -> float:
    return float(np.random.default_rng(np.random.SeedSequence([config.seed, 0xE7, event])).uniform(0, 2 * np.pi))


def render_event(config: SyntheticConfig, data: SyntheticAnnotations, event: int) -> Iterator[np.ndarray]:
    """Every frame of an event's continuous sequence, in order.

    gap_frames frames of empty pool, then each dive followed by gap_frames frames of empty pool: the
    pads at both ends let a reader shift a sample's window by up to gap_frames frames.
    """
    canvas = _Canvas(config.height, config.width)
    dives = sorted((idx, ann) for (e, idx), ann in data.annotations.items() if e == event)
    truths = [data.truth[truth_key(event, idx)] for idx, _ in dives]
    phase = _event_phase(config, event)
    gap = config.gap_frames

    def empty_pool(before: dict[str, Any], after: dict[str, Any], first: int) -> Iterator[np.ndarray]:
        # the camera drifts from one dive's framing (tint, offset) to the next one's
        a, b = before["nuisance"], after["nuisance"]
        for g in range(gap):
            lam = (g + 1) / (gap + 1)
            tint = (1 - lam) * np.asarray(a["tint"]) + lam * np.asarray(b["tint"])
            offset = (1 - lam) * a["x_offset"] + lam * b["x_offset"]
            yield _to_uint8(_background(canvas, tint, offset) + _waves(canvas, first + g, phase))

    for k, ((_, ann), truth) in enumerate(zip(dives, truths)):
        yield from empty_pool(truths[k - 1] if k else truth, truth, ann["start_frame"] - gap)
        yield from render_dive(config, truth, ann["start_frame"])
    yield from empty_pool(truths[-1], truths[-1], dives[-1][1]["end_frame"] + 1)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG with fixed settings (4:4:4, no optimisation, no metadata): deterministic bytes."""
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="JPEG", quality=quality, subsampling=0,
                                            optimize=False, progressive=False)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# generation, manifest and the idempotent entry point


def _write(path: Path, payload: bytes, sizes: dict[str, int], digests: dict[str, str], rel: str) -> None:
    path.write_bytes(payload)
    sizes[rel] = len(payload)
    digests[rel] = hashlib.sha256(payload).hexdigest()


def _generate(config: SyntheticConfig, target: Path) -> None:
    data = make_annotations(config)
    sizes: dict[str, int] = {}
    digests: dict[str, str] = {}
    (target / ANNOTATIONS_DIR).mkdir(parents=True)
    pickles = {ANNOTATIONS_FILE: data.annotations, TRAIN_SPLIT_FILE: data.train_split,
               TEST_SPLIT_FILE: data.test_split}
    for name, obj in pickles.items():
        rel = f"{ANNOTATIONS_DIR}/{name}"
        _write(target / rel, pickle.dumps(obj, protocol=PICKLE_PROTOCOL), sizes, digests, rel)
    truth = json.dumps(data.truth, indent=1, sort_keys=True).encode()
    _write(target / TRUTH_FILE, truth, sizes, digests, TRUTH_FILE)

    events: dict[str, dict[str, int]] = {}
    frame_digests: dict[str, str] = {}
    frame_sizes: dict[str, int] = {}
    for event, length in sorted(data.event_lengths.items()):
        (target / FRAMES_DIR / f"{event:02d}").mkdir(parents=True)
        count = total = 0
        for frame, image in enumerate(render_event(config, data, event)):
            rel = f"{FRAMES_DIR}/" + FRAME_PATTERN.format(event=event, frame=frame)
            payload = encode_jpeg(image, config.jpeg_quality)
            _write(target / rel, payload, frame_sizes, frame_digests, rel)
            count += 1
            total += len(payload)
        if count != length:  # pragma: no cover - internal consistency
            raise RuntimeError(f"event {event}: rendered {count} frames, expected {length}")
        events[str(event)] = {"frames": count, "bytes": total}

    content = hashlib.sha256()
    for rel, digest in sorted({**digests, **frame_digests}.items()):
        content.update(f"{rel}\0{digest}\n".encode())
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "config": config.identity(),
        "files": sizes,
        "events": events,
        "content_sha256": content.hexdigest(),
    }
    # written last: a folder without it is never taken for a complete dataset
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    manifest = read_json(Path(root) / MANIFEST_FILE)
    return manifest if isinstance(manifest, dict) else None


def dataset_status(config: SyntheticConfig) -> str:
    """'complete', or why the dataset at config.root cannot be used as it is."""
    root = Path(config.root)
    if not root.is_dir():
        return "missing"
    manifest = read_manifest(root)
    if manifest is None:
        return "no manifest"
    if manifest.get("generator") != GENERATOR or manifest.get("version") != GENERATOR_VERSION:
        return "other generator version"
    if manifest.get("config") != config.identity():
        return "other config"
    try:
        for rel, size in manifest["files"].items():
            if (root / rel).stat().st_size != size:
                return f"{rel} has the wrong size"
        expected_events = {f"{int(e):02d}" for e in manifest["events"]}
        if {p.name for p in (root / FRAMES_DIR).iterdir()} != expected_events:
            return "frame folders differ"
        for event, info in manifest["events"].items():
            folder = root / FRAMES_DIR / f"{int(event):02d}"
            expected = {Path(FRAME_PATTERN.format(event=int(event), frame=f)).name for f in range(info["frames"])}
            with os.scandir(folder) as entries:
                found = {entry.name: entry.stat().st_size for entry in entries}
            if set(found) != expected:
                return f"event {event} frames incomplete"
            if sum(found.values()) != info["bytes"]:
                return f"event {event} frames have the wrong size"
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return "unreadable"
    return "complete"


_OWN_ENTRIES = {ANNOTATIONS_DIR, FRAMES_DIR, TRUTH_FILE, MANIFEST_FILE}


def _replaceable(root: Path) -> bool:
    """Only a folder that holds nothing but a (possibly partial) synthetic dataset is replaced."""
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("generator") == GENERATOR:
        return True
    return {p.name for p in root.iterdir()} <= _OWN_ENTRIES


def ensure_synthetic_dataset(config: SyntheticConfig | None = None) -> Path:
    """Generate the dataset under config.root unless a complete one for this config is there.

    The new dataset is written to a temporary sibling folder and renamed into place, so config.root
    never holds a half-written dataset. A folder at config.root that holds anything else than a
    synthetic dataset is never deleted (ValueError).
    """
    config = config if config is not None else SyntheticConfig()
    root = Path(config.root)
    if dataset_status(config) == "complete":
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if dataset_status(config) == "complete":  # another process made it while we waited
            return root
        if root.exists() and not (root.is_dir() and _replaceable(root)):
            raise ValueError(f"{root} exists and is not a synthetic dataset; refusing to overwrite it "
                             "(choose another synthetic.root or remove it)")
        remove_temporaries(root.parent, root.name)  # left by an interrupted run
        with atomic_directory(root) as folder:
            _generate(config, folder)
    return root


def load_truth(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The hidden generating variables, keyed "event_idx"."""
    return json.loads((Path(root) / TRUTH_FILE).read_text())


def frame_path(root: str | os.PathLike, event: int, frame: int) -> Path:
    return Path(root) / FRAMES_DIR / FRAME_PATTERN.format(event=event, frame=frame)


def load_sample_frames(root: str | os.PathLike, key: tuple[int, int],
                       annotations: dict[tuple[int, int], dict[str, Any]] | None = None) -> np.ndarray:
    """(frames, H, W, 3) uint8 frames start_frame..end_frame of one sample, read from disk."""
    if annotations is None:
        # the restricted loader: a folder passed as synthetic data may come from anyone
        annotations = load_pickle(Path(root) / ANNOTATIONS_DIR / ANNOTATIONS_FILE, "synthetic annotation file")
    ann = annotations[key]
    frames = []
    for f in range(ann["start_frame"], ann["end_frame"] + 1):
        with Image.open(frame_path(root, key[0], f)) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


__all__ = [
    "ACTION_TYPES",
    "FRAME_PATTERN",
    "ActionType",
    "SyntheticAnnotations",
    "SyntheticConfig",
    "dataset_status",
    "encode_jpeg",
    "ensure_synthetic_dataset",
    "frame_path",
    "load_sample_frames",
    "load_truth",
    "make_annotations",
    "middle_three_sum",
    "render_dive",
    "render_event",
]
