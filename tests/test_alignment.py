"""The measurements behind Theorem 3.1's checks: mutual information, prediction variance, A3/A4, shift."""

import numpy as np
import pytest

from lnlkit.alignment import design_conditions, mutual_information_bits, prediction_variance, two_sample_accuracy


def _blobs(n, separation, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = separation * np.eye(3)
    return centres[labels] + rng.normal(size=(n, 3)), labels


def test_mutual_information_reaches_the_label_entropy_and_vanishes_without_signal():
    features, labels = _blobs(300, 12.0, 0)
    assert mutual_information_bits(features, labels) == pytest.approx(np.log2(3), abs=0.05)
    noise = np.random.default_rng(1).normal(size=(300, 3))
    assert abs(mutual_information_bits(noise, labels)) < 0.1
    with pytest.raises(ValueError, match="labels"):
        mutual_information_bits(features, labels[:10])


def test_prediction_variance_falls_with_more_training_data():
    small, small_labels = _blobs(30, 1.5, 0)
    large, large_labels = _blobs(600, 1.5, 0)
    test, _ = _blobs(200, 1.5, 2)
    assert prediction_variance(large, large_labels, test, resamples=10) < \
        0.5 * prediction_variance(small, small_labels, test, resamples=10)


def test_design_conditions_closed_form():
    original = np.array([[2.0, 0.0], [0.0, 1.0]])  # radius 2, F^T F = diag(4, 1)
    out = design_conditions(original, 0.5 * original)
    assert out["original"] == {"radius": 2.0, "lambda_min": 1.0, "worst_case_variance": 4.0}
    # shrinking every feature keeps A3 and breaks A4; the worst-case variance is scale-free
    assert out["a3_holds"] and not out["a4_holds"]
    assert out["modified"]["worst_case_variance"] == pytest.approx(4.0)


def test_two_sample_accuracy_sees_a_shift_and_nothing_else():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    assert abs(two_sample_accuracy(a, b) - 0.5) < 0.1
    assert two_sample_accuracy(a, b + 5.0) > 0.95
