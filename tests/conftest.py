import os
import sys
import tempfile
from pathlib import Path

# Before torch is imported, and inherited by every process a test starts (train.py, eval.py, torchrun workers): one
# thread count and the CPU everywhere, so results that tests compare across processes are computed the same way on any
# machine. The suite's tolerances are CPU figures; GPU checks are bench.py's and scripts/gpu_session.sh's.
os.environ["OMP_NUM_THREADS"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# the drivers' models run by PyTorch, whose figures the suite's tolerances were set on; the CPU default (OpenVINO,
# --backend auto) is compared with it in test_backends.py, and those tests name their backend
os.environ["RETINA_LESION_BACKEND"] = "torch"
# the locks of the suite's output folders in a folder of the session's own, not the user's ~/.cache
os.environ.setdefault("RETINA_LESION_LOCKS", tempfile.mkdtemp(prefix="retina-lesion-test-locks-"))

import pytest  # noqa: E402
import torch  # noqa: E402

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
