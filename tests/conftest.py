import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic set in the real layout, generated once per test session."""
    from data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("data") / "oct"
    write_dataset(root, seed=7, train=4, val=2, test=2, slices=8, height=64, width=48)
    return root
