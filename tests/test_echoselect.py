"""EchoSelect: similarity, the refined set, the official code's weights, selection quality and thresholds."""

import numpy as np
import pytest

from lnlkit.echoselect import (feature_similarity, group_weights, kept_at_precision, oracle_tau, refined_set,
                               selection_quality, tau_from_noise_rate, tau_sweep)


def test_feature_similarity_is_the_row_cosine():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[3.0, 0.0], [-1.0, -1.0], [0.0, 5.0]])
    np.testing.assert_allclose(feature_similarity(a, b), [1.0, -1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="same|must both"):
        feature_similarity(a, b[:2])


def test_refined_set_has_the_training_set_size_and_swaps_in_edits_below_tau():
    originals = np.zeros((4, 2, 2, 3), np.uint8)
    edits = np.full((4, 2, 2, 3), 9, np.uint8)
    images, keep = refined_set(originals, edits, [0.9, 0.2, 0.5, 0.49], tau=0.5)
    assert images.shape == originals.shape and keep.tolist() == [True, False, True, False]
    assert (images[[0, 2]] == 0).all() and (images[[1, 3]] == 9).all()


def test_group_weights_give_each_group_the_same_total_and_mean_one():
    keep = np.array([True, False, False, False, True, False, False, False])
    kept, edits = group_weights(keep)
    assert len(kept) == 2 and len(edits) == 8
    assert kept.sum() == pytest.approx(edits.sum()) and np.concatenate([kept, edits]).mean() == pytest.approx(1)


def test_selection_quality_precision_coverage_and_recall():
    clean = np.array([0, 1, 2, 3, 4, 5])
    noisy = np.array([0, 1, 2, 0, 0, 5])  # samples 3 and 4 are mislabelled
    quality = selection_quality([True, True, False, True, False, False], clean, noisy)
    assert quality == {"kept": 3, "coverage": 0.5, "precision": pytest.approx(2 / 3),
                       "clean_recall": pytest.approx(2 / 4)}
    sweep = tau_sweep([0.9, 0.8, 0.7, 0.1, 0.2, 0.6], clean, noisy, [0.0, 0.5, 1.0])
    assert [s["kept"] for s in sweep] == [6, 4, 0] and sweep[1]["precision"] == 1.0


def test_thresholds_from_the_noise_rate_and_from_the_clean_labels():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 10, 2000)
    noisy = np.where(rng.random(2000) < 0.3, (clean + 1) % 10, clean)
    # clean samples more similar than noisy ones, with overlap
    similarity = np.where(clean == noisy, rng.normal(0.7, 0.1, 2000), rng.normal(0.4, 0.1, 2000))
    rate = float(np.mean(clean != noisy))
    tau = tau_from_noise_rate(similarity, rate)
    assert np.mean(similarity >= tau) == pytest.approx(1 - rate, abs=1e-3)
    best = oracle_tau(similarity, clean, noisy)
    errors = lambda t: int(np.sum((similarity >= t) != (clean == noisy)))  # noqa: E731
    grid = np.linspace(similarity.min(), similarity.max() + 1e-9, 4001)
    assert errors(best) <= min(errors(t) for t in grid)
    # 0.7 N(0.7, 0.1) and 0.3 N(0.4, 0.1) cross at 0.55 - 0.01 ln(7/3) / 0.3 = 0.522
    assert abs(best - 0.522) < 0.03
    # perfectly separated: both thresholds select exactly the clean samples
    separated = np.where(clean == noisy, 0.9, 0.1)
    assert selection_quality(separated >= oracle_tau(separated, clean, noisy), clean, noisy)["precision"] == 1.0
    assert selection_quality(separated >= tau_from_noise_rate(separated, rate), clean, noisy)["clean_recall"] == 1.0


def test_kept_at_precision_is_the_largest_prefix_that_meets_it():
    clean = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    noisy = np.array([0, 1, 9, 3, 9, 5, 6, 9])  # samples 2, 4 and 7 are mislabelled
    similarity = np.array([0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.1])
    # ranked: c c n c n c c n -> running precision 1, 1, 2/3, 3/4, 3/5, 4/6, 5/7, 5/8
    assert kept_at_precision(similarity, clean, noisy, 1.0) == {"kept": 2, "tau": 0.8, "precision": 1.0}
    at_70 = kept_at_precision(similarity, clean, noisy, 0.7)
    assert at_70["kept"] == 7 and at_70["tau"] == 0.4
    kept = similarity >= at_70["tau"]  # the threshold keeps exactly that many, at that precision
    assert selection_quality(kept, clean, noisy)["precision"] == pytest.approx(at_70["precision"])
    # a tie cannot be split: the two 0.8s go together, so precision 1 keeps only the first
    tied = kept_at_precision([0.9, 0.8, 0.8], [0, 1, 2], [0, 1, 9], 1.0)
    assert tied["kept"] == 1
    assert kept_at_precision([0.5, 0.4], [0, 1], [9, 9], 0.5)["kept"] == 0
    with pytest.raises(ValueError, match="selection accuracy"):
        kept_at_precision(similarity, clean, noisy, 0.0)
