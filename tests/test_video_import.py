"""t2cr-prepare videos=<folder>: published videos -> the uint8 frame cache, each video decoded once
(t2cr.data.video_import).

Every generated frame carries its own decoded index, drawn as a 4 x 4 grid of black or white blocks (16 bits,
the block centres survive the codec and the cache's resize), so a test reads back which decoded frame each
cached row came from and compares it with the frame number the sample asked for.
"""

from __future__ import annotations

import json
import pickle
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from t2cr.data import video_import
from t2cr.data.annotations import read_annotations
from t2cr.data.cache import MANIFEST_FILE, SAMPLES_DIR, CachedFrameSource, cache_status, open_frame_source
from t2cr.data.config import DataConfig, VideoConfig
from t2cr.data.frames import JpegFolderSource
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.data.video_import import (
    JpegOutput,
    VideoImportError,
    import_videos,
    plan_videos,
)

SIZE = 64  # frames are SIZE x SIZE; the code's blocks are SIZE / 4 wide
GRID = 4
BITS = GRID * GRID


# ------------------------------------------------------------------------------------------- frames with a code


def code_frame(index: int) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    block = SIZE // GRID
    for bit in range(BITS):
        if (index >> bit) & 1:
            row, col = divmod(bit, GRID)
            image[row * block:(row + 1) * block, col * block:(col + 1) * block] = 255
    return image


def read_code(image: np.ndarray) -> int:
    """The index drawn in a frame of any size (the block centres)."""
    height, width = image.shape[:2]
    code = 0
    for bit in range(BITS):
        row, col = divmod(bit, GRID)
        y, x = int((row + 0.5) * height / GRID), int((col + 0.5) * width / GRID)
        if image[y, x].mean() > 127:
            code |= 1 << bit
    return code


def codes(frames: np.ndarray) -> list[int]:
    return [read_code(frame) for frame in frames]


def write_video(path: Path, count: int, variable_rate: bool = False, seed: int = 0) -> Path:
    """`count` frames showing their index. variable_rate: packets get irregular timestamps (1-9 hundredths of a
    second apart), as a variable-frame-rate file has."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.cumsum(np.random.default_rng(seed).integers(1, 10, size=count)) * 10
    written = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "3"}
        if variable_rate:
            stream.time_base = Fraction(1, 1000)

        def mux(packets) -> None:
            nonlocal written
            for packet in packets:
                if variable_rate:  # mpeg4 without B-frames: decoding order = display order, pts = dts
                    packet.pts = packet.dts = int(times[written])
                    packet.time_base = Fraction(1, 1000)
                written += 1
                container.mux(packet)

        for index in range(count):
            mux(stream.encode(av.VideoFrame.from_ndarray(code_frame(index), format="rgb24")))
        mux(stream.encode())
    return path


# ------------------------------------------------------------------------------------------- MTL-AQA layout


def write_mtl_annotations(folder: Path, ranges: dict[tuple[int, int], tuple[int, int]], test: list[tuple[int, int]],
                          difficulties: tuple[float, ...] = (2.0, 3.0)) -> Path:
    """The three MTL-AQA pickles for `ranges` ((event, idx) -> (start_frame, end_frame)); `test` keys go to the
    test split, the others to train."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for n, (key, (start, end)) in enumerate(sorted(ranges.items())):
        difficulty = difficulties[n % len(difficulties)]
        # a dive scores at most 30 x DD (three judges' 10s): 15 + n % 15 keeps every sample valid and distinct
        labels[key] = {"final_score": round(difficulty * (15 + n % 15), 2), "difficulty": difficulty,
                       "dive_number": f"{n % 2 + 1}05B", "start_frame": start, "end_frame": end,
                       "judge_scores": [7.0] * 7}
    train = [k for k in sorted(ranges) if k not in test]
    for name, payload in (("final_annotations_dict_with_dive_number.pkl", labels), ("train_split_0.pkl", train),
                          ("test_split_0.pkl", test)):
        (folder / name).write_bytes(pickle.dumps(payload))
    return folder


def mtl_config(tmp: Path, **overrides) -> DataConfig:
    fields = {"name": "mtl_aqa", "format": "mtl_aqa", "annotations": str(tmp / "annotations"),
              "root": str(tmp / "videos"), "num_frames": 8, "train_shift": 2,
              "transform": TransformConfig(resize=[32, 32], crop=[28, 28]), "num_workers": 0, "synthetic": None,
              "cache_dir": str(tmp / "cache")}
    return DataConfig(**{**fields, **overrides})


# events 1 (CFR, 120 frames) and 2 (variable frame rate, 90 frames); annotation frame n = decoded frame n - 1
# a sample reads frames end - 9 .. end + 2 (8 frames, a shift of up to 2 either way)
RANGES = {
    (1, 1): (5, 20), (1, 2): (30, 45), (1, 3): (40, 52),  # (1, 3) overlaps (1, 2)
    (1, 4): (100, 118),  # up to frame 120: the video's last (frames 1..120)
    (1, 5): (110, 119),  # up to 121: past the end
    (1, 6): (1, 6),  # from frame -3: before the first
    (2, 1): (20, 30), (2, 2): (70, 88),  # up to 90, the variable-rate video's last
}
OUTSIDE = {"1_5", "1_6"}


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("competition")
    write_video(root / "videos" / "01.mp4", 120)
    write_video(root / "videos" / "02.mp4", 90, variable_rate=True)
    write_mtl_annotations(root / "annotations", RANGES, test=[(1, 3), (2, 1)])
    return root


@pytest.fixture
def data(competition, tmp_path) -> Path:
    shutil.copytree(competition / "videos", tmp_path / "videos")
    shutil.copytree(competition / "annotations", tmp_path / "annotations")
    return tmp_path


def samples_of(config: DataConfig) -> list[Sample]:
    splits = read_annotations(config)
    return splits["train"] + splits["test"]


def run_import(config: DataConfig, **kwargs):
    jobs = plan_videos(samples_of(config), config.root, config.video.pattern)
    return import_videos(jobs, config, config.cache_dir, **kwargs)


def counting_decoder(monkeypatch, fail_on: int | None = None) -> list[str]:
    """Record every video decoded (and raise on the `fail_on`-th, an interrupted import)."""
    decoded: list[str] = []
    real = video_import.decoded_frames

    def decode(path, threads=0):
        decoded.append(Path(path).name)
        if fail_on is not None and len(decoded) == fail_on:
            raise RuntimeError("interrupted")
        return real(path, threads)

    monkeypatch.setattr(video_import, "decoded_frames", decode)
    return decoded


def cache_files(cache: Path) -> dict[str, int]:
    return {p.relative_to(cache).as_posix(): p.stat().st_mtime_ns for p in sorted(cache.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------------------- tests


def test_each_cached_frame_is_the_frame_the_sample_asked_for(data, monkeypatch):
    config = mtl_config(data)
    decoded = counting_decoder(monkeypatch)
    summary = run_import(config, workers=2)
    assert sorted(decoded) == ["01.mp4", "02.mp4"]  # each video once, for all its samples
    assert (summary.videos, summary.decoded_videos, summary.reused_videos) == (2, 2, 0)
    assert {o.key for o in summary.outside} == OUTSIDE and summary.samples == len(RANGES) - len(OUTSIDE)
    past = next(o for o in summary.outside if o.key == "1_5")
    assert (past.first, past.last, past.video_frames) == (110, 121, 120) and "numbered 1..120" in past.describe()

    cache = data / "cache"
    manifest = json.loads((cache / MANIFEST_FILE).read_text())
    assert manifest["samples"] == summary.samples and manifest["data"]["root"] == config.root
    for entry in manifest["entries"]:
        index = json.loads((cache / SAMPLES_DIR / f"{entry}.json").read_text())
        rows = np.load(cache / SAMPLES_DIR / f"{entry}.npy")
        _, end = RANGES[tuple(int(p) for p in index["key"].split("_"))]
        assert index["frames"] == list(range(end - 7 - 2, end + 3)) and rows.shape == (12, 32, 32, 3)
        assert codes(rows) == [n - 1 for n in index["frames"]], entry  # frame n = the n-th decoded frame

    # a run reads it unchanged: open_frame_source finds it complete, the reader's reads carry the right frames
    source = open_frame_source(config)
    assert isinstance(source, CachedFrameSource) and cache_status(cache, config) == "complete"
    reader = SampleReader(source, VideoTransform(config.transform), config.num_frames, config.frame_selection,
                          config.train_shift)
    for sample in samples_of(config):
        if sample.key_str in OUTSIDE:
            continue
        for rng in (None, np.random.default_rng(1), np.random.default_rng(2)):
            numbers = reader.frame_numbers(sample, rng)
            assert codes(source.read(sample, numbers)) == [n - 1 for n in numbers]


def test_a_second_import_decodes_nothing(data, monkeypatch):
    config = mtl_config(data)
    run_import(config)
    before = cache_files(data / "cache")
    decoded = counting_decoder(monkeypatch)
    summary = run_import(config)
    assert decoded == [] and (summary.decoded_videos, summary.reused_videos, summary.decoded_frames) == (0, 2, 0)
    assert {o.key for o in summary.outside} == OUTSIDE  # still reported, from the record
    assert cache_files(data / "cache") == before
    # another first frame changes what frame n is: every video is decoded again
    again = run_import(mtl_config(data, video=VideoConfig(first_frame=0)))
    assert again.decoded_videos == 2


def test_an_interrupted_import_resumes_with_the_unfinished_videos(data, monkeypatch):
    config = mtl_config(data)
    counting_decoder(monkeypatch, fail_on=2)  # the second video fails: the first is finished
    with pytest.raises(RuntimeError, match="interrupted"):
        run_import(config, workers=1)
    cache = data / "cache"
    assert not (cache / MANIFEST_FILE).exists() and cache_status(cache, config).endswith("did not finish)")
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]
    finished = sorted(p.stem for p in (cache / SAMPLES_DIR).glob("*.json"))
    assert finished == ["1_1", "1_2", "1_3", "1_4"]  # video 01's samples, whole

    decoded = counting_decoder(monkeypatch)
    summary = run_import(config, workers=1)
    assert decoded == ["02.mp4"] and (summary.decoded_videos, summary.reused_videos) == (1, 1)
    assert cache_status(cache, config) == "complete" and summary.samples == len(RANGES) - len(OUTSIDE)


KILL_AFTER_FIRST_VIDEO = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_video_import import mtl_config, run_import
from t2cr.data import video_import

real = video_import._write_record

def record_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a kill right after the first video

video_import._write_record = record_then_die
run_import(mtl_config(Path(sys.argv[1])), workers=1)
"""


def test_a_killed_import_resumes_with_the_unfinished_videos(data, monkeypatch):
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_VIDEO, str(data), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cache, config = data / "cache", mtl_config(data)
    assert not (cache / MANIFEST_FILE).exists() and len(list((cache / ".video_import").glob("*.json"))) == 1
    decoded = counting_decoder(monkeypatch)
    summary = run_import(config, workers=2)
    assert decoded == ["02.mp4"] and (summary.decoded_videos, summary.reused_videos) == (1, 1)
    assert cache_status(cache, config) == "complete" and {o.key for o in summary.outside} == OUTSIDE


def test_clips_one_per_sample_and_jpegs_in_the_reference_layout(tmp_path):
    """AQA-7: one clip per sample, frames 1..n; the JPEGs land where data.frame_pattern reads them."""
    samples = [Sample(key=(1, i), score=50.0, difficulty=None, action_type="diving", frames=f"diving-out/{i:03d}",
                      start_frame=1, end_frame=20, group="diving") for i in (1, 2)]
    for i in (1, 2):
        write_video(tmp_path / "videos" / "diving" / f"{i:03d}.avi", 20, seed=i)
    pattern = "{folder}/img_{frame:05d}.jpg"
    config = DataConfig(name="aqa7", format="aqa7", root=str(tmp_path / "frames"), frame_pattern=pattern,
                        num_frames=20, transform=TransformConfig(resize=[32, 32], crop=[28, 28]), synthetic=None,
                        video=VideoConfig(pattern="{group}/{key[1]:03d}.avi"))
    jobs = plan_videos(samples, tmp_path / "videos", config.video.pattern)
    assert [job.name for job in jobs] == ["diving/001.avi", "diving/002.avi"]
    summary = import_videos(jobs, config, tmp_path / "cache", jpeg=JpegOutput(tmp_path / "frames", pattern))
    assert summary.samples == 2 and summary.jpegs == 40 and not summary.outside
    source, jpegs = CachedFrameSource(tmp_path / "cache"), JpegFolderSource(tmp_path / "frames", pattern)
    for sample in samples:
        assert codes(source.read(sample, range(1, 21))) == list(range(20))
        assert codes(jpegs.read(sample, range(1, 21))) == list(range(20))
    assert (tmp_path / "frames" / "diving-out" / "002" / "img_00001.jpg").is_file()


def test_whole_videos_are_read_by_their_decoded_frame_count(tmp_path, monkeypatch, caplog):
    """JIGSAWS: no frame range, frames spread over the whole video by linspace; the packet count that plans
    the frames is checked against the decoded count (here made wrong on purpose)."""
    names = ["Suturing_B001", "Suturing_C002"]
    for n, name in enumerate(names):
        write_video(tmp_path / "videos" / f"{name}_capture1.avi", 50 + 13 * n, variable_rate=bool(n))
    samples = [Sample(key=name, score=20.0, difficulty=None, action_type="Suturing", frames=f"{name}_capture1",
                      group="Suturing") for name in names]
    config = DataConfig(name="jigsaws", format="jigsaws", root=str(tmp_path / "frames"), frame_pattern=None,
                        num_frames=10, frame_selection="linspace", synthetic=None,
                        transform=TransformConfig(resize=[32, 32], crop=[28, 28]),
                        video=VideoConfig(pattern="{folder}.avi", first_frame=0))
    real_count = video_import.count_packets
    monkeypatch.setattr(video_import, "count_packets", lambda path: real_count(path) + 5)
    jobs = plan_videos(samples, tmp_path / "videos", config.video.pattern)
    summary = import_videos(jobs, config, tmp_path / "cache", jpeg=JpegOutput(tmp_path / "frames", None))
    assert summary.samples == 2 and summary.jpegs == 50 + 63
    assert "packets count 55 frames, 50 were decoded" in caplog.text  # planned again with the true count
    source, listed = CachedFrameSource(tmp_path / "cache"), JpegFolderSource(tmp_path / "frames", None)
    for sample, count in zip(samples, (50, 63)):
        assert source.frame_count(sample) == count == listed.frame_count(sample)
        numbers = np.linspace(0, count - 1, 10).round().astype(int)
        assert codes(source.read(sample, numbers)) == numbers.tolist()
        assert codes(listed.read(sample, numbers)) == numbers.tolist()


def test_bad_input_is_one_clear_error(data):
    config = mtl_config(data)
    (data / "videos" / "02.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 20)
    with pytest.raises(VideoImportError, match=f"cannot open video {data / 'videos' / '02.mp4'}.*re-download"):
        run_import(config, workers=1)
    with pytest.raises(ValueError, match=r"pattern='\{event\}.mp4' cannot name the video of sample 1_1"):
        plan_videos(samples_of(config), data / "videos", "{event}.mp4")


# ------------------------------------------------------------------------------------------- the command line


def compose_prepare(*overrides: str):
    from hydra import compose, initialize_config_dir

    from t2cr.resources import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="prepare", overrides=list(overrides))


def prepare_args(root: Path) -> list[str]:
    return ["data=mtl_aqa", f"data.annotations={root / 'annotations'}", f"videos={root / 'videos'}",
            f"data.cache_dir={root / 'cache'}", "data.num_frames=8", "data.train_shift=2",
            "data.transform.resize=[32,32]", "data.transform.crop=[28,28]", "data.num_workers=0"]


def test_prepare_command_refuses_missing_videos(data, capsys):
    from t2cr.cli.common import UserError
    from t2cr.cli.prepare import prepare_from_videos

    args = prepare_args(data)
    with pytest.raises(UserError, match=r"videos=.*nowhere is not a folder"):
        prepare_from_videos(compose_prepare(*args, f"videos={data / 'nowhere'}"))
    (data / "videos" / "02.mp4").unlink()
    with pytest.raises(UserError, match=f"1 of 2 videos are missing, e.g. {data / 'videos' / '02.mp4'}.*skip_missing"):
        prepare_from_videos(compose_prepare(*args))
    summary = prepare_from_videos(compose_prepare(*args, "data.skip_missing=true"))
    assert summary.videos == 1 and {o.key for o in summary.outside} == OUTSIDE
    out = capsys.readouterr().out
    assert "2 samples not cached: their video is missing" in out and "1_5: frames 110..121 of 01.mp4" in out
    assert f"data.root={data / 'videos'} data.cache_dir={data / 'cache'} data.use_cache=require" in out


@pytest.mark.slow
def test_prepare_from_a_competition_video_then_train(tmp_path):
    """A generated competition video of 300 frames -> t2cr-prepare videos= -> t2cr-train data=mtl_aqa from the
    cache (no frame files anywhere)."""
    from framework_helpers import read_metrics, run_cli

    write_video(tmp_path / "videos" / "01.mp4", 300)
    ranges = {(1, i): (20 * i - 10, 20 * i + 5) for i in range(1, 14)}  # ends 25 .. 265, 16 frames each
    write_mtl_annotations(tmp_path / "annotations", ranges, test=[(1, 3), (1, 8), (1, 12)])
    data = ["data=mtl_aqa", f"data.annotations={tmp_path / 'annotations'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_frames=16", "data.train_shift=2", "data.transform.resize=[32,32]", "data.transform.crop=[28,28]",
            "data.num_workers=0", "data.voting_exemplars=2", "data.batch_size=2", "data.eval_batch_size=2"]
    made = run_cli("prepare", [*data, f"videos={tmp_path / 'videos'}"], cwd=tmp_path)
    assert "1 videos (1 decoded, 0 already done), 13 samples" in made.stdout, made.stdout
    again = run_cli("prepare", [*data, f"videos={tmp_path / 'videos'}"], cwd=tmp_path)
    assert "1 videos (0 decoded, 1 already done), 13 samples" in again.stdout and "0 frames decoded" in again.stdout

    train = ["model.backbone.name=tiny", "data.clip_length=8", "data.num_clips=3", "data.base_starts=[0,4,8]",
             "model.clips.aux_strategy=2-clip-avg1", "trainer.max_epochs=1", "trainer.accelerator=cpu",
             "logger=csv", "callbacks.progress=none", f"data.root={tmp_path / 'videos'}", "data.use_cache=require",
             f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("train", [*data, *train], cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test/num_samples"] == 3 and np.isfinite(metrics["test/spearman"])
