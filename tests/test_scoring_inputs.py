"""Scoring refuses what cannot be a scored performance (issue 18): too few frames, a single image, frames of
mixed sizes, and files that are not t2cr checkpoints, each with one line and exit code 2; a video shorter or
longer than the model's window is resampled and the JSON says so under `warnings`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from test_explain import make_bank, small_config
from test_run_settings import run_command

from t2cr.bank import BANK_KEY, ClipNeeds, read_scoring_video, score_frames
from t2cr.checkpoints import inspect_checkpoint, load_checkpoint
from t2cr.cli.common import UserError
from t2cr.losses import LossConfig
from t2cr.module import OptimConfig, T2CRModule

WINDOW = 40  # data.num_frames of the test checkpoint: the frames the model reads
NEEDED = 32  # what its clip plan reads of them: clips of 8 frames starting at 0, 6, ..., 24
POOL = "2.0"


def tiny_module(num_frames: int = WINDOW) -> T2CRModule:
    torch.manual_seed(0)
    run = {"data": {"num_frames": num_frames, "frame_selection": "end_aligned"}, "seed": 0,
           "matmul_precision": "highest", "precision": "32-true"}
    return T2CRModule(dataclasses.asdict(small_config(**{"clips.num_frames": num_frames})),
                      dataclasses.asdict(LossConfig()), dataclasses.asdict(OptimConfig()), run=run)


def lightning_dict(module: T2CRModule, bank: dict | None) -> dict:
    """What Lightning writes for T2CRModule (the parts loading reads), as the tests of test_explain do."""
    contents = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "pytorch-lightning_version": pl.__version__}
    if bank is not None:
        contents[BANK_KEY] = bank
    return contents


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny checkpoint (written, not trained: seconds) whose clip plan reads 32 of a 40-frame window."""
    module = tiny_module()
    bank = make_bank(module.model, size=16, resize=20)
    bank["num_frames"] = WINDOW
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(lightning_dict(module, bank), path)
    return path


@pytest.fixture(scope="module")
def needs(checkpoint) -> ClipNeeds:
    return ClipNeeds.of(load_checkpoint(checkpoint))


def frame_folder(folder: Path, count: int, sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    """`count` JPEG frames of 16 x 16 (width, height per frame number in `sizes`)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        width, height = (sizes or {}).get(i, (16, 16))
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return folder


def black_video(path: Path, count: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(count):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def console(command: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The console command t2cr-<command> (its module, as the installed script runs it) in a subprocess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name in ("HYDRA_FULL_ERROR", "T2CR_TRACEBACKS"):  # the one-line report, not the traceback
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", f"t2cr.cli.{command}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def one_line_error(run: subprocess.CompletedProcess | str, command: str = "score") -> str:
    """The refusal: exit code 2 (checked by the caller for in-process runs), no traceback, one error line."""
    stderr = run if isinstance(run, str) else run.stderr
    if not isinstance(run, str):
        assert run.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith(f"t2cr-{command}: error: ")]
    assert len(errors) == 1 and not [line for line in stderr.splitlines() if line and line not in errors
                                     and not line.startswith(f"t2cr-{command}: warning: ")], stderr
    return errors[0]


# ------------------------------------------------------------------------- the console command
@pytest.mark.slow
def test_score_refuses_a_single_image(checkpoint, tmp_path):
    image = tmp_path / "still.jpg"
    Image.new("RGB", (16, 16)).save(image)
    run = console("score", [f"ckpt_path={checkpoint}", f"video={image}", f"pool={POOL}"], tmp_path)
    line = one_line_error(run)
    assert f"video={image} is a single image" in line and f"1 frame found, {NEEDED} needed" in line
    assert run.stdout == ""  # no score


@pytest.mark.slow
def test_score_refuses_a_video_shorter_than_the_clip_plan(checkpoint, tmp_path):
    video = black_video(tmp_path / "short.mp4", 3)
    run = console("score", [f"ckpt_path={checkpoint}", f"video={video}", f"pool={POOL}"], tmp_path)
    line = one_line_error(run)
    assert f"video={video} has 3 frames, too few to score: {NEEDED} needed" in line
    assert f"clips of 8 frames from a {WINDOW}-frame window" in line


@pytest.mark.slow
def test_score_refuses_a_folder_of_mixed_frame_sizes(checkpoint, tmp_path):
    folder = frame_folder(tmp_path / "frames", 36, sizes={5: (16, 12), 9: (20, 20)})
    run = console("score", [f"ckpt_path={checkpoint}", f"video={folder}", f"pool={POOL}"], tmp_path)
    line = one_line_error(run)
    assert f"video={folder} mixes frame sizes: 0005.jpg is 16x12" in line  # the first that differs
    assert "(0000.jpg on) are 16x16" in line


@pytest.mark.slow
def test_score_refuses_a_truncated_checkpoint(checkpoint, tmp_path):
    truncated = tmp_path / "cut.ckpt"
    data = checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    video = black_video(tmp_path / "v.mp4", NEEDED)
    run = console("score", [f"ckpt_path={truncated}", f"video={video}", f"pool={POOL}"], tmp_path)
    line = one_line_error(run)
    assert f"ckpt_path={truncated} is not a t2cr checkpoint: unreadable zip archive" in line
    assert "truncated or corrupt" in line and "PytorchStreamReader" not in run.stderr


@pytest.mark.slow
def test_score_refuses_a_raw_state_dict(checkpoint, tmp_path):
    raw = tmp_path / "weights.pt"
    torch.save(torch.load(checkpoint, weights_only=True)["state_dict"], raw)
    folder = frame_folder(tmp_path / "frames", NEEDED)
    run = console("score", [f"ckpt_path={raw}", f"video={folder}", f"pool={POOL}"], tmp_path)
    line = one_line_error(run)
    assert f"ckpt_path={raw} is not a t2cr checkpoint: a bare state dict of" in line
    assert "no hyper-parameters and no exemplar bank" in line


# ------------------------------------------------------------------- in process, through Hydra
def test_a_short_video_is_repeated_up_to_the_window_and_reported(checkpoint, tmp_path, monkeypatch, capsys):
    folder = frame_folder(tmp_path / "frames", 36)
    output = tmp_path / "score.json"
    args = [f"ckpt_path={checkpoint}", f"video={folder}", f"pool={POOL}", f"output={output}", "device=cpu"]
    assert run_command("score", args, monkeypatch, tmp_path) == 0
    result = json.loads(output.read_text())
    assert result["num_frames_read"] == 36 and result["num_frames_used"] == WINDOW
    assert len(result["warnings"]) == 1
    assert "36 frames, fewer than the 40 the model reads (data.num_frames): 4 frames were repeated" in \
        result["warnings"][0]
    assert f"t2cr-score: warning: {result['warnings'][0]}" in capsys.readouterr().err
    module = load_checkpoint(checkpoint)
    frames = read_scoring_video(folder, ClipNeeds.of(module)).frames
    assert result["score"] == pytest.approx(score_frames(module.model, module.exemplar_bank, frames, POOL)["score"])


def test_explain_refuses_a_short_video_and_reports_resampling(checkpoint, tmp_path, monkeypatch, capsys):
    base = [f"ckpt_path={checkpoint}", f"pool={POOL}", "steps=2", "internal_batch_size=2", "num_frames_shown=2",
            f"output_dir={tmp_path / 'out'}", "name=x", "device=cpu"]
    short = black_video(tmp_path / "short.mp4", 3)
    assert run_command("explain", [*base, f"video={short}"], monkeypatch, tmp_path) == 2
    line = one_line_error(capsys.readouterr().err, "explain")
    assert f"video={short} has 3 frames, too few to score: {NEEDED} needed" in line
    longer = frame_folder(tmp_path / "long", 60)
    assert run_command("explain", [*base, f"video={longer}"], monkeypatch, tmp_path) == 0
    warnings = json.loads((tmp_path / "out" / "x.json").read_text())["warnings"]
    assert len(warnings) == 1 and "60 frames, more than the 40 the model reads" in warnings[0]
    assert "data.frame_selection=end_aligned" in warnings[0]  # the run read consecutive frames


def test_eval_refuses_a_file_that_is_not_a_checkpoint_with_the_same_check(checkpoint, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "model_rgb.pth"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(2, 3, 1, 1, 1)}, raw)
    args = [f"ckpt_path={raw}", "trainer=cpu", f"hydra.run.dir={tmp_path / 'eval'}"]
    assert run_command("eval", args, monkeypatch, tmp_path) == 2
    line = one_line_error(capsys.readouterr().err, "eval")
    assert f"ckpt_path={raw} is not a t2cr checkpoint: a bare state dict of 1 tensor " in line
    assert "'Conv3d_1a_7x7.conv3d.weight'" in line


# ------------------------------------------------------------------------ the inputs, directly
def test_the_needs_come_from_the_checkpoints_clip_plan(needs):
    assert needs == ClipNeeds(frames_needed=NEEDED, num_frames=WINDOW, clip_length=8, frame_selection="end_aligned")


@pytest.mark.parametrize("count, warned", [(NEEDED, "8 frames were repeated"), (WINDOW, None),
                                           (79, "one every 2.00")])
def test_the_window_is_filled_evenly_and_any_resampling_reported(count, warned, needs, tmp_path):
    read = read_scoring_video(frame_folder(tmp_path / "f", count), needs)
    assert len(read.frames) == count and len(read.source_frames) == WINDOW
    assert read.source_frames[0] == 0 and read.source_frames[-1] == count - 1
    assert np.all(np.diff(read.source_frames) >= 0)
    if warned is None:
        assert read.warnings == []
    else:
        assert len(read.warnings) == 1 and warned in read.warnings[0]


def test_one_frame_below_the_clip_plan_is_refused_before_decoding(needs, tmp_path):
    folder = frame_folder(tmp_path / "f", NEEDED - 1)
    (folder / "0000.jpg").write_bytes(b"not a jpeg")  # never decoded: the count refuses first
    with pytest.raises(UserError, match=f"has {NEEDED - 1} frames, too few to score: {NEEDED} needed"):
        read_scoring_video(folder, needs)


@pytest.mark.parametrize("name, content, message", [
    ("missing.mp4", None, "does not exist"),
    ("empty", "folder", "is a folder without .jpg/.jpeg/.png frames"),
    ("notes.mp4", b"no video here", "cannot decode video"),
    ("still.png", "image", "is a single image, not a video: 1 frame found, 32 needed"),
])
def test_other_inputs_that_cannot_be_scored(name, content, message, needs, tmp_path):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content == "image":
        Image.new("RGB", (16, 16)).save(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_scoring_video(path, needs)


# ------------------------------------------------------------------------- checkpoints, directly
def test_a_checkpoint_of_another_lightning_project_is_refused(tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel

    class Other(BoringModel):
        def __init__(self, lr: float = 0.1, hidden: int = 32) -> None:
            super().__init__()
            self.save_hyperparameters()

    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path)
    trainer.fit(Other())
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(UserError, match=r"other\.ckpt is not a t2cr checkpoint: a checkpoint of another model: "
                                        r"its hyper-parameters \(lr, hidden\) lack T2CRModule's model, loss, optim"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_a_checkpoint_without_a_bank_serves_evaluation_but_not_scoring(checkpoint, tmp_path):
    contents = torch.load(checkpoint, weights_only=True)
    del contents[BANK_KEY]
    torch.save(contents, tmp_path / "epoch3.ckpt")
    with pytest.raises(UserError, match="is not a t2cr checkpoint: no exemplar bank to vote with"):
        load_checkpoint(tmp_path / "epoch3.ckpt", need_bank=True)
    assert load_checkpoint(tmp_path / "epoch3.ckpt", need_bank=False).exemplar_bank is None


def test_weights_of_another_t2cr_model_are_refused(checkpoint, tmp_path):
    """Hyper-parameters of one size, weights of another: Lightning's strict load error, named as such."""
    contents = torch.load(checkpoint, weights_only=True)
    wider = small_config(**{"clips.num_frames": WINDOW, "hidden_dim": 48})
    contents["hyper_parameters"] = {**contents["hyper_parameters"], "model": dataclasses.asdict(wider)}
    torch.save(contents, tmp_path / "mixed.ckpt")
    with pytest.raises(UserError, match="its weights do not fit the T2CR model its hyper-parameters describe"):
        load_checkpoint(tmp_path / "mixed.ckpt")


@pytest.mark.parametrize("contents, message", [
    (b"", "the file is empty"),
    (b"just some text\n", "unreadable, neither a torch zip archive nor a torch pickle"),
    ({"state_dict": {}, "epoch": 3}, r"no hyper-parameters \(its keys: state_dict, epoch\)"),
    ({"weights": {"w": torch.zeros(1)}}, "no state_dict"),
    ([torch.zeros(1)], "it holds a list, not a checkpoint dict"),
])
def test_files_that_are_not_t2cr_checkpoints(contents, message, tmp_path):
    path = tmp_path / "file.ckpt"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        torch.save(contents, path)
    with pytest.raises(UserError, match=f"ckpt_path={path} is not a t2cr checkpoint: {message}"):
        inspect_checkpoint(path)


def test_a_checkpoint_holding_foreign_objects_is_refused_without_running_them(tmp_path):
    from omegaconf import OmegaConf

    torch.save({"state_dict": {}, "hyper_parameters": OmegaConf.create({"lr": 0.1})}, tmp_path / "omega.ckpt")
    with pytest.raises(UserError, match=r"Python objects of other code \(omegaconf\.dictconfig\.DictConfig\)"):
        inspect_checkpoint(tmp_path / "omega.ckpt", option="compare_ckpt")
