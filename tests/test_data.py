import os
import pickle

import numpy as np
import pytest

from lnlkit import data


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"labels": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.safe_load_pickle(path)


def test_safe_unpickler_reads_numpy(tmp_path):
    path = tmp_path / "ok.pkl"
    payload = {"clean_label": np.arange(5), "names": ["a", "b"]}
    path.write_bytes(pickle.dumps(payload))
    loaded = data.safe_load_pickle(path)
    assert np.array_equal(loaded["clean_label"], np.arange(5)) and loaded["names"] == ["a", "b"]


def test_missing_cifar_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LNLKIT_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("LNLKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DataUnavailableError, match="cifar10-jpeg.tar.gz") as info:
        data.load_cifar("cifar10", download=False)
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(data.DataUnavailableError, match="CIFAR-10_human.pt"):
        data.load_cifar_n("worst", download=False)


def test_digits_and_moons_are_fixed_splits():
    digits = data.load_digits()
    assert digits.train.inputs.shape == (1200, 8, 8, 1) and digits.train.inputs.dtype == np.uint8
    assert len(digits.test) == 597 and digits.train.num_classes == 10
    assert np.array_equal(digits.train.labels, data.load_digits().train.labels)
    moons = data.load_moons()
    assert moons.train.inputs.shape == (1000, 2) and not moons.train.is_image


def test_unknown_dataset_and_label_set():
    with pytest.raises(ValueError, match="unknown data set"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown label set"):
        data.load_cifar_n("best")


def test_cifar10_from_offline_mirror(shared_data):
    splits = data.load_cifar("cifar10", download=False)
    assert splits.train.inputs.shape == (50_000, 32, 32, 3) and splits.test.inputs.shape == (10_000, 32, 32, 3)
    assert splits.train.source == "CIFAR-10 JPEG mirror"
    assert np.bincount(splits.train.labels).tolist() == [5000] * 10
    mean = splits.train.inputs.reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=2e-3)  # official CIFAR-10 statistics
    # The CIFAR-N clean labels line up index for index with this order.
    assert np.array_equal(data.load_cifar_n("aggre", download=False)["clean"], splits.train.labels)


def test_canonical_order_depends_on_the_images_not_on_how_they_were_split():
    from lnlkit.data import canonical_order

    images = np.random.default_rng(0).integers(0, 256, (60, 4, 4, 3), dtype=np.uint8)
    images[7] = images[3]  # a duplicate may tie
    shuffled = images[np.random.default_rng(1).permutation(60)]
    assert np.array_equal(images[canonical_order(images)], shuffled[canonical_order(shuffled)])
    assert not np.array_equal(images[canonical_order(images)], images)
