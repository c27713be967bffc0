import sys
from pathlib import Path

import pytest
import torch

import t2cr.run  # noqa: F401  (registers the schemas and resolvers that composing conf/ needs, as every t2cr command does)
from t2cr.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

# tests import their shared helpers module by name
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic dataset (12 train / 7 test dives of 16 frames, 32 x 32), shared read-only;
    tests that change it copy it first."""
    root = tmp_path_factory.mktemp("tiny_synthetic") / "data"
    ensure_synthetic_dataset(SyntheticConfig(root=str(root), num_train=12, num_test=7, num_events=2, height=32,
                                             width=32, frames_per_dive=16))
    return root
