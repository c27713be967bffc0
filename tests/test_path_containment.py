"""Paths built from annotation strings, sample keys and patterns stay under their roots (issue 29).

A FineDiving event or a JIGSAWS video name becomes a frame folder, a video path and a JPEG output folder. The
readers refuse one that is a path ('../x', 'a/b', an absolute path, a NUL) in one line naming the key and the
file; wherever a path is joined (t2cr.data.frames.path_under / fill_pattern) it is checked again, whatever
the value came from.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from framework_helpers import run_cli

from t2cr.data import packaged
from t2cr.data.annotation_checks import AnnotationError
from t2cr.data.annotations import read_annotations
from t2cr.data.config import DataConfig, VideoConfig
from t2cr.data.frames import JpegFolderSource, PathOutsideRootError, VideoFileSource, fill_pattern, path_under
from t2cr.data.samples import Sample
from t2cr.data.transforms import TransformConfig
from t2cr.data.video_import import JpegOutput, VideoJob, import_videos, plan_videos

FINEDIVING_FILES = ("train_split.pkl", "fine-grained_annotation_aqa.pkl", "FineDiving_coarse_annotation.pkl")
BAD_NAMES = ["../escape", "..", "/tmp/escape", "a/b", "a\\..\\b", "x\0y"]


def read_packaged(dataset: str, name: str) -> object:
    return pickle.loads((packaged.packaged_root() / dataset / name).read_bytes())  # our own files: trusted


def crafted_finediving(folder: Path, event: str) -> tuple[Path, tuple[str, int]]:
    """A copy of the packaged FineDiving files whose first training sample has the event `event`."""
    shutil.copytree(packaged.packaged_root() / "FineDiving", folder)
    split, aqa, coarse = (read_packaged("FineDiving", name) for name in FINEDIVING_FILES)
    old = split[0]
    new = (event, old[1])
    split[0] = new
    aqa[new], coarse[new] = aqa.pop(old), coarse.pop(old)
    for name, content in zip(FINEDIVING_FILES, (split, aqa, coarse)):
        (folder / name).write_bytes(pickle.dumps(content))
    return folder, new


def crafted_jigsaws(folder: Path, name: str) -> Path:
    """A copy of the packaged JIGSAWS files whose first Suturing video of fold 0 is `name` (scores kept)."""
    shutil.copytree(packaged.packaged_root() / "JIGSAWS", folder)
    splits, labels = read_packaged("JIGSAWS", "splits.pkl"), read_packaged("JIGSAWS", "label.pkl")
    old = splits["Suturing"][0][0]
    splits["Suturing"][0][0] = name
    labels[name] = labels.pop(old)
    (folder / "splits.pkl").write_bytes(pickle.dumps(splits))
    (folder / "label.pkl").write_bytes(pickle.dumps(labels))
    return folder


def sample(frames: str, key: object = "k") -> Sample:
    return Sample(key=key, score=1.0, difficulty=None, action_type=None, frames=frames, start_frame=1, end_frame=3)


# ------------------------------------------------------------------------------ refused when read


@pytest.mark.parametrize("event", BAD_NAMES)
def test_a_finediving_event_that_is_a_path_is_refused_naming_the_key_and_the_file(event, tmp_path):
    folder, key = crafted_finediving(tmp_path / "crafted", event)
    config = DataConfig(format="finediving", annotations=str(folder), frame_pattern="{folder}/{frame:05d}.jpg")
    with pytest.raises(AnnotationError) as refused:
        read_annotations(config)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'train_split.pkl'}: {key!r}: event is {event!r}: it names a frame folder")
    assert "\n" not in message


@pytest.mark.parametrize("name", ["Suturing_/../../escape", "Suturing_B001/../../../escape", "../escape",
                                  "Suturing_\0x"])
def test_a_jigsaws_video_name_that_is_a_path_is_refused_naming_the_key_and_the_file(name, tmp_path):
    folder = crafted_jigsaws(tmp_path / "crafted", name)
    config = DataConfig(format="jigsaws", annotations=str(folder), task="Suturing", fold=0, frame_pattern=None)
    with pytest.raises(AnnotationError, match="it names a frame folder, so it must be a single name") as refused:
        read_annotations(config)
    assert str(refused.value).startswith(f"{folder / 'splits.pkl'}: {name!r}: a video name of Suturing fold 0 is")


def test_the_packaged_names_are_single_names_and_still_read():
    splits = read_annotations(DataConfig(format="finediving", frame_pattern="{folder}/{frame:05d}.jpg"))
    assert len(splits["train"]) == 2251
    jigsaws = read_annotations(DataConfig(format="jigsaws", task="Suturing", fold=0, frame_pattern=None))
    assert all("/" not in s.key for s in jigsaws["train"] + jigsaws["test"])


# ------------------------------------------------------------------------------ refused where a path is joined


@pytest.mark.parametrize("frames", ["../escape", "a/../../escape", "/etc", "x\0y"])
def test_the_frame_folder_joiner_refuses_a_folder_outside_the_root_wherever_it_came_from(frames, tmp_path):
    source = JpegFolderSource(tmp_path / "frames", "{folder}/{frame:05d}.jpg")
    with pytest.raises(PathOutsideRootError, match="refusing to read or write outside"):
        source.folder(sample(frames))
    with pytest.raises(PathOutsideRootError):
        source.path(sample(frames), 1)


def test_a_value_that_climbs_is_refused_even_where_the_pattern_lands_it_inside_the_root(tmp_path):
    """'deep/er/{folder}' with folder '../x' stays under the root, but names another sample's frames."""
    source = JpegFolderSource(tmp_path, "deep/er/{folder}/{frame:05d}.jpg")
    with pytest.raises(PathOutsideRootError, match=r"its folder '\.\./x' climbs out with '\.\.'"):
        source.path(sample("../x"), 1)
    with pytest.raises(PathOutsideRootError, match="climbs out"):  # Windows' separator counts too
        source.path(sample("..\\x"), 1)


def test_a_pattern_with_folders_of_its_own_is_fine_inside_the_root(tmp_path):
    assert fill_pattern(tmp_path, "{folder}/img_{frame:05d}.jpg", {"folder": "diving-out/003", "frame": 7},
                        "a frame") == tmp_path / "diving-out/003/img_00007.jpg"
    assert path_under(tmp_path, "01/3", "a folder") == tmp_path / "01" / "3"


def test_a_pattern_that_leads_outside_the_root_is_refused(tmp_path):
    source = JpegFolderSource(tmp_path / "frames", "../{folder}/{frame:05d}.jpg")
    with pytest.raises(PathOutsideRootError, match="leads outside it"):
        source.path(sample("01"), 1)


@pytest.mark.parametrize(("pattern", "key"), [("{folder}.mp4", "k"), ("{key}.mp4", "../escape"),
                                              ("../{folder}.mp4", "k")])
def test_the_video_path_joiner_refuses_a_video_outside_the_root(pattern, key, tmp_path):
    frames = "../escape" if pattern == "{folder}.mp4" else "ok"
    with pytest.raises(PathOutsideRootError):
        VideoFileSource(tmp_path / "videos", pattern).path(sample(frames, key))
    with pytest.raises(PathOutsideRootError):
        plan_videos([sample(frames, key)], tmp_path / "videos", pattern)


def import_config(tmp_path: Path, frame_pattern: str | None) -> DataConfig:
    return DataConfig(name="x", format="jigsaws", root=str(tmp_path / "out" / "jpeg"), frame_pattern=frame_pattern,
                      num_frames=3, frame_selection="linspace", synthetic=None,
                      transform=TransformConfig(resize=[32, 32], crop=[28, 28]),
                      video=VideoConfig(pattern="{folder}.avi", first_frame=0))


@pytest.mark.parametrize("frame_pattern", [None, "{folder}/{frame:06d}.jpg"])
def test_the_jpeg_output_creates_nothing_outside_its_root_whatever_the_sample_says(frame_pattern, tmp_path):
    """A job made by hand (not by plan_videos, which refuses it too): the JPEG folders are checked before any
    is created."""
    out = tmp_path / "out"
    out.mkdir()
    crafted = sample("../escape")
    job = VideoJob("v.avi", tmp_path / "videos" / "v.avi", (("entry", crafted),))
    with pytest.raises(PathOutsideRootError, match="the JPEG folder of sample k '../escape'"):
        import_videos([job], import_config(tmp_path, frame_pattern), out / "cache",
                      jpeg=JpegOutput(out / "jpeg", frame_pattern), workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["cache"]
    assert not (tmp_path / "escape").exists()


def test_a_jpeg_pattern_that_leads_outside_its_root_creates_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = VideoJob("v.avi", tmp_path / "videos" / "v.avi", (("entry", sample("ok")),))
    pattern = "../{folder}/{frame:06d}.jpg"
    with pytest.raises(PathOutsideRootError, match="a JPEG frame of sample k '../ok/000001.jpg' leads outside it"):
        import_videos([job], import_config(tmp_path, pattern), out / "cache", jpeg=JpegOutput(out / "jpeg", pattern),
                      workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["cache"]


# ------------------------------------------------------------------------------ t2cr-prepare


def test_prepare_with_a_crafted_key_creates_nothing_outside_its_output_root(tmp_path):
    folder, key = crafted_finediving(tmp_path / "crafted", "../escape")
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    out.mkdir()
    # the video the crafted key names, beside (not in) videos=: the import would decode it and write its JPEGs
    crafted_video = tmp_path / "escape" / f"{key[1]}.mp4"
    crafted_video.parent.mkdir()
    crafted_video.write_bytes(b"not decoded before the JPEG folders are made")
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "crafted" not in p.parts}
    result = run_cli("prepare", ["data=finediving", f"data.annotations={folder}", f"videos={videos}",
                                 f"jpeg_dir={out / 'jpeg'}", f"data.cache_dir={out / 'cache'}",
                                 "data.skip_missing=true"], cwd=tmp_path, timeout=300, check=False)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-4000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"t2cr-prepare: error: {folder / 'train_split.pkl'}: {key!r}: event is '../escape'"), result.stderr
    after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "crafted" not in p.parts}
    assert after == before  # nothing beside the output root, nothing in it either
    assert sorted(p.name for p in out.iterdir()) == []
