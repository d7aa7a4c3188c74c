import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_root() -> Path | None:
    """The offline data folder: $LNLKIT_DATA, else ../shared/data beside the checkout."""
    for candidate in [os.environ.get("LNLKIT_DATA"), SHARED_DATA]:
        if candidate and (Path(candidate) / "cifar10-jpeg.tar.gz").exists():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data(monkeypatch):
    root = shared_data_root()
    if root is None:
        pytest.skip("offline CIFAR data not found (set LNLKIT_DATA to the folder with cifar10-jpeg.tar.gz)")
    monkeypatch.setenv("LNLKIT_DATA", str(root))
    return root


@pytest.fixture
def fake_images():
    """Random uint8 'images' with the CIFAR shape and balanced labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2000, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(2000) % 10
    return images, labels


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty lnlkit cache (stages, cached runs) for one test; offline data is still found via LNLKIT_DATA."""
    root = shared_data_root()
    if root is not None:
        monkeypatch.setenv("LNLKIT_DATA", str(root))
    monkeypatch.setenv("LNLKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the diffusion generators' small convolutions run several
    times faster on one thread than on two on a loaded two-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
