import numpy as np
import pytest

from lnlkit import noise
from lnlkit.data import LabelledData


def test_symmetric_rate_counts_only_flips_to_other_classes():
    labels = np.arange(50_000) % 10
    result = noise.symmetric_noise(labels, 10, 0.4, seed=3)
    # Flipping uniformly over all C classes (a common bug) would give 0.36.
    assert abs(result.achieved_rate - 0.4) < 0.01
    T = result.empirical_transition()
    off = T[~np.eye(10, dtype=bool)]
    assert np.allclose(off, 0.4 / 9, atol=0.01)
    assert np.allclose(T.sum(1), 1)


def test_pairflip_maps_to_next_class_only():
    labels = np.arange(20_000) % 7
    result = noise.pairflip_noise(labels, 7, 0.3, seed=0)
    flipped = result.noisy != labels
    assert np.all(result.noisy[flipped] == (labels[flipped] + 1) % 7)
    assert abs(result.achieved_rate - 0.3) < 0.015


def test_class_conditional_seed_determinism():
    labels = np.arange(1000) % 10
    a, b = (noise.symmetric_noise(labels, 10, 0.5, seed=5).noisy for _ in range(2))
    c = noise.symmetric_noise(labels, 10, 0.5, seed=6).noisy
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_idn_rows_rate_and_determinism(fake_images):
    images, labels = fake_images
    x = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    result = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1)
    rows = result.realised_rows
    assert np.allclose(rows.sum(1), 1, atol=1e-5)
    assert np.allclose(rows[np.arange(len(labels)), labels], 1 - result.flip_rates, atol=1e-5)
    assert 0.0 <= result.flip_rates.min() and result.flip_rates.max() <= 1.0
    assert abs(result.flip_rates.mean() - 0.4) < 0.01
    assert abs(result.achieved_rate - 0.4) < 0.03
    again = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1)
    assert np.array_equal(result.noisy, again.noisy)
    assert not np.array_equal(result.noisy, noise.instance_dependent_noise(x, labels, 10, 0.4, seed=2).noisy)


def test_idn_is_instance_dependent(fake_images):
    images, labels = fake_images
    x = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    rows = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1).realised_rows
    for c in range(3):
        off = rows[labels == c].copy()
        off[:, c] = -1
        targets = np.unique(off.argmax(1))
        assert len(targets) >= 2  # samples of one class flip towards different classes
        assert c not in targets


def test_idn_vectorised_equals_reference_loop(fake_images):
    images, labels = fake_images
    x = images[:400].transpose(0, 3, 1, 2).reshape(400, -1)
    fast = noise.instance_dependent_noise(x, labels[:400], 10, 0.3, seed=7).noisy
    slow = noise.instance_dependent_noise_loop(x, labels[:400], 10, 0.3, seed=7)
    assert np.array_equal(fast, slow)


def test_idn_input_scale_changes_labels(fake_images):
    images, labels = fake_images
    x = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    a = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1).noisy
    b = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1, input_scale="unit").noisy
    assert not np.array_equal(a, b)


def test_idn_rate_zero_is_clean(fake_images):
    images, labels = fake_images
    result = noise.instance_dependent_noise(images.reshape(len(images), -1), labels, 10, 0.0, seed=1)
    assert result.achieved_rate == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: noise.symmetric_noise(np.zeros(5, int), 10, 1.0, 0), r"\[0, 1\)"),
    (lambda: noise.symmetric_noise(np.zeros(5, int), 10, -0.1, 0), r"\[0, 1\)"),
    (lambda: noise.symmetric_noise(np.zeros(5, int), 10, 0.95, 0), "no more likely"),
    (lambda: noise.pairflip_noise(np.zeros(5, int), 10, 0.5, 0), "ambiguous"),
    (lambda: noise.symmetric_noise(np.array([0, 3, 10]), 10, 0.2, 0), r"labels must lie in \[0, 9\]"),
    (lambda: noise.symmetric_noise(np.array([0.5, 1.0]), 10, 0.2, 0), "integer"),
    (lambda: noise.instance_dependent_noise(np.zeros((4, 3)), np.zeros(5, int), 10, 0.2, 0), "4 inputs but 5"),
    (lambda: noise.instance_dependent_noise(np.zeros((5, 3)), np.zeros(5, int), 10, 0.2, 0, input_scale="x"),
     "input_scale"),
    (lambda: noise.make_noise("gaussian", None, 0.2), "unknown noise kind"),
    (lambda: noise.make_noise("human", None), "label set"),
])
def test_invalid_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_save_writes_labels_and_rate(tmp_path):
    labels = np.arange(100) % 10
    result = noise.symmetric_noise(labels, 10, 0.2, seed=0)
    result.save(tmp_path / "n.npz")
    with np.load(tmp_path / "n.npz") as z:
        assert np.array_equal(z["noisy_labels"], result.noisy)
        assert np.array_equal(z["clean_labels"], labels)
        assert float(z["achieved_rate"]) == pytest.approx(result.achieved_rate)


@pytest.mark.parametrize("label_set, rate", [("aggre", 0.0901), ("random1", 0.1723), ("worst", 0.4021)])
def test_human_labels_match_published_rates(shared_data, label_set, rate):
    result = noise.human_noise(label_set, download=False)
    assert len(result.noisy) == 50_000
    assert result.achieved_rate == pytest.approx(rate, abs=5e-5)


def test_human_labels_refuse_misaligned_clean_labels(shared_data):
    with pytest.raises(ValueError, match="canonical train order"):
        noise.human_noise("worst", clean_labels=np.zeros(50_000, int), download=False)


def test_make_noise_uses_chw_pixels():
    images = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    data = LabelledData(images, np.arange(50) % 5, list("abcde"), "toy", "test")
    via_dataset = noise.make_noise("idn", data, 0.3, seed=2).noisy
    direct = noise.instance_dependent_noise(images.transpose(0, 3, 1, 2).reshape(50, -1), data.labels, 5, 0.3, 2)
    assert np.array_equal(via_dataset, direct.noisy)
