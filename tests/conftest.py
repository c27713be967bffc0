import sys
from pathlib import Path

import pytest
import torch

# tests import their shared helpers module by name
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
