import numpy as np
import pytest
import torch

from lnlkit.data import LabelledData, hold_out, load_digits
from lnlkit.estimators import CLIPEstimator, EmbeddingEstimator, clip_tokenizer, tiny_clip, train_proxy_estimator
from lnlkit.methods import build_method
from lnlkit.methods.osa import OSA, detection_metrics, mean_noise_rank, official_weight, osa_weight, space_shift
from lnlkit.noise import make_noise
from lnlkit.profiles import train_config
from lnlkit.run import run_experiment
from lnlkit.trainer import Trainer


def test_paper_score_is_zero_at_and_below_beta_and_has_eq5_shape():
    beta = 0.2
    s = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    w = osa_weight(s, beta)
    assert (w[s <= beta] == 0).all()
    t = s[s > beta] - beta
    torch.testing.assert_close(w[s > beta], t ** 2 * (1 - t))
    # The maximum is 4/27 at t = 2/3, not 1: the weight is bounded well below the paper's "w <= 1".
    assert w.max().item() == pytest.approx(4 / 27, abs=1e-6)
    assert (s[w.argmax()] - beta).item() == pytest.approx(2 / 3, abs=1e-3)
    # Increasing up to t = 2/3, decreasing after.
    rising = w[(s > beta) & (s - beta < 2 / 3)]
    assert (rising.diff() > 0).all()


def test_paper_score_turns_negative_when_similarity_exceeds_beta_plus_one():
    # With a negative space shift a perfect match has t = s - beta > 1 and Eq. 5 goes below 0.
    assert osa_weight(torch.tensor([1.0]), beta=-0.2).item() == pytest.approx(-(1.2 ** 2) * 0.2)


def test_official_score_normalises_by_the_batch_maximum():
    s = torch.tensor([-0.3, 0.1, 0.2, 0.3, 0.5, 0.9])
    w = official_weight(s, beta=0.2)
    assert (w[s <= 0.2] == 0).all()
    assert w[-1] == 0  # the most similar pair of the batch
    t = (s - 0.2).clamp_min(0) / 0.7
    torch.testing.assert_close(w, t ** 2 * (1 - t ** 2))
    assert 0 <= w.min() and w.max() <= 0.25
    # Units cancel: the code's logits (100 x cosine) give the same weights.
    torch.testing.assert_close(official_weight(100 * s, 100 * 0.2), w)


def test_detection_metrics_on_a_known_answer():
    weights = np.array([0.1, 0.0, 0.05, 0.0, 0.0, 0.12])
    noisy = np.array([False, True, False, True, False, True])
    m = detection_metrics(weights, noisy)
    assert m["clean_kept"] == pytest.approx(2 / 3)  # clean sample 4 has weight 0
    assert m["noise_recall"] == pytest.approx(2 / 3)  # noisy sample 5 has weight 0.12
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["flagged_fraction"] == pytest.approx(0.5)


def test_mean_noise_rank_is_optimal_for_a_perfect_ranking_and_uses_average_ties():
    rng = np.random.default_rng(0)
    noisy = np.zeros(2000, bool)
    noisy[rng.choice(2000, 370, replace=False)] = True
    perfect = np.where(noisy, rng.uniform(0, 0.1, 2000), rng.uniform(0.2, 1, 2000))
    rank, optimal = mean_noise_rank(perfect, noisy)
    assert optimal == 1815.5  # the paper's Table 9 optimum for 370 of 2,000
    assert rank == pytest.approx(optimal)
    rank_reversed, _ = mean_noise_rank(-perfect, noisy)
    assert rank_reversed == pytest.approx((370 + 1) / 2)
    tied, _ = mean_noise_rank(np.zeros(2000), noisy)  # all tied: everyone shares rank 1000.5
    assert tied == pytest.approx(1000.5)


@pytest.fixture(scope="module")
def tiny_clip_estimator():
    classes = ["cat", "dog", "ship"]
    return CLIPEstimator(tiny_clip(image_size=32, context_length=16), clip_tokenizer(16), classes)


def test_tiny_open_clip_estimator_runs_offline_end_to_end(tiny_clip_estimator):
    est = tiny_clip_estimator
    images = torch.randint(0, 256, (10, 3, 20, 20), dtype=torch.uint8)  # resized to 32 inside
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    s = est.pair_similarity(images, labels)
    assert s.shape == (10,) and (s.abs() <= 1 + 1e-5).all()
    expected = (est.encode_images(images) * est.class_embeddings()[labels]).sum(1)
    torch.testing.assert_close(s, expected)
    for kind in ("tokens", "words"):
        beta = space_shift(est, num_pairs=16, class_kind=kind)
        assert -1 <= beta <= 1
    grey = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)  # one channel is repeated
    assert est.encode_images(grey).shape == (4, est.class_embeddings().shape[1])


def test_space_shift_is_deterministic_for_a_seed(tiny_clip_estimator):
    a = space_shift(tiny_clip_estimator, num_pairs=16, seed=3)
    assert a == space_shift(tiny_clip_estimator, num_pairs=16, seed=3)
    assert a != space_shift(tiny_clip_estimator, num_pairs=16, seed=4)
    with pytest.raises(ValueError, match="uniform"):
        space_shift(tiny_clip_estimator, num_pairs=4, image_kind="checkerboard")


def test_osa_trains_with_the_tiny_clip_estimator(tiny_clip_estimator):
    rng = np.random.default_rng(0)
    data = LabelledData(rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 48),
                        ["cat", "dog", "ship"], "random", "test")
    noisy = make_noise("symmetric", data, rate=0.3, seed=1)
    method = OSA(estimator=tiny_clip_estimator, num_random_pairs=8)
    config = train_config("smoke", "digits", epochs=1, progress=False, device="cpu")
    trainer = Trainer(method, data.with_noisy_labels(noisy.noisy), data, config)
    expected = osa_weight(method.similarity, method.beta)
    batch_idx = torch.arange(5)
    torch.testing.assert_close(method.sample_weights(type("B", (), {"indices": batch_idx})()), expected[:5])
    trainer.fit()
    assert method.options()["random_classes"] == "tokens"
    assert np.isfinite(trainer.history[-1]["train_loss"])


def test_embedding_estimator_random_classes_match_the_table_statistics():
    table = torch.randn(10, 6) * torch.arange(1, 7) + 3.0
    est = EmbeddingEstimator(torch.nn.Flatten(), table, torch.zeros(6), torch.ones(6), input_shape=(6, 1, 1))
    draws = est.random_classes(4000, "gaussian", torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 6)
    torch.testing.assert_close(draws.norm(dim=1), torch.ones(4000))
    with pytest.raises(ValueError, match="gaussian"):
        est.random_classes(4, "tokens", torch.Generator())


def test_proxy_osa_on_digits_flags_most_idn_noise_and_keeps_clean_samples():
    record = run_experiment(method="osa", dataset="digits", noise="idn", rate=0.4, seed=1, save=False,
                            progress=False, held_out=0.3, method_options={"estimator": "proxy"},
                            config_overrides={"epochs": 2}).record
    measured = record["method_options"]
    assert record["n_held_out"] == 360 and record["n_train"] == 840
    assert measured["clean_kept"] > 0.95 and measured["noise_recall"] > 0.5
    assert measured["mean_noise_rank"] > 0.95 * measured["optimal_noise_rank"]
    assert measured["auroc"] > 0.9
    assert record["stages"][-1]["name"] == "osa-scores"


def test_proxy_estimator_needs_a_held_out_split_and_never_trains_on_it():
    with pytest.raises(ValueError, match="held-out"):
        run_experiment(method="osa", dataset="digits", noise="idn", rate=0.2, save=False, progress=False,
                       method_options={"estimator": "proxy"}, config_overrides={"epochs": 1})
    train = load_digits().train
    rest, held = hold_out(train, 0.3)
    assert len(rest) + len(held) == len(train)
    rows = {r.tobytes() for r in rest.inputs}
    assert not any(h.tobytes() in rows for h in held.inputs[:50])
    assert np.bincount(held.labels).min() >= 30  # stratified


def test_build_method_takes_options_only_and_checks_them():
    assert build_method("osa", estimator="proxy").estimator == "proxy"
    with pytest.raises(ValueError, match="no option"):
        build_method("osa", class_names=["a"])  # facts of the run are not options
    with pytest.raises(ValueError, match="scoring"):
        build_method("osa", scoring="mean")
    with pytest.raises(ValueError, match="estimator"):
        build_method("osa", estimator="clipp")


def test_clip_without_download_fails_at_once_with_instructions(monkeypatch):
    import lnlkit.estimators as estimators
    from lnlkit.data import DataUnavailableError

    monkeypatch.setattr(estimators, "_cached_hub_file", lambda repo: None)
    monkeypatch.delenv("LNLKIT_CLIP_WEIGHTS", raising=False)
    with pytest.raises(DataUnavailableError, match="LNLKIT_CLIP_WEIGHTS"):
        CLIPEstimator.from_open_clip(["cat"], download=False)


def test_proxy_estimator_is_seeded_and_leaves_the_global_random_state_alone():
    _, reference = hold_out(load_digits().train, 0.3)
    before = torch.random.get_rng_state()
    a = train_proxy_estimator(reference, epochs=1, seed=5)
    assert torch.equal(before, torch.random.get_rng_state())
    b = train_proxy_estimator(reference, epochs=1, seed=5)
    torch.testing.assert_close(a.class_embeddings(), b.class_embeddings())


def test_cone_prediction_matches_monte_carlo_for_anisotropic_vectors():
    from lnlkit.geometry import cone_prediction

    rng = np.random.default_rng(0)
    d = 256
    factor = rng.normal(size=(d, d)) * np.exp(-np.arange(d) / 40)[:, None]  # a decaying spectrum
    cov, mu = factor @ factor.T / d, rng.normal(size=d) * 0.15
    a, b = rng.multivariate_normal(mu, cov, size=20_000), rng.multivariate_normal(mu, cov, size=20_000)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    predicted = cone_prediction(mu, cov)
    assert 0.2 < predicted["beta"] < 0.3 and 20 < predicted["effective_dimension"] < 50  # a real cone
    assert abs(cosines.mean() - predicted["beta"]) < 0.01
    assert abs(cosines.std() / predicted["sd"] - 1) < 0.05
    # isotropic, centred: beta 0, spread 1 / sqrt(d), effective dimension d
    iso = cone_prediction(np.zeros(d), np.eye(d))
    assert iso["beta"] == 0 and iso["effective_dimension"] == pytest.approx(d)
    assert iso["sd"] == pytest.approx(1 / np.sqrt(d))
    # two distributions: the numerator is mu_a . mu_b
    other = cone_prediction(mu, cov, -mu, cov)
    assert other["beta"] == pytest.approx(-predicted["beta"])


def test_ce_controls_for_the_clean_held_out_split():
    """CE's clean_reference: the controls for OSA's access to a clean split (only it; it added to the noisy set)."""
    from lnlkit.methods.base import RunFacts

    digits = load_digits()
    train, reference = hold_out(digits.train, 0.3)
    noisy = make_noise("symmetric", train, 0.4, seed=1).noisy
    train = train.with_noisy_labels(noisy)
    facts = RunFacts(train=train, noise_rate=0.4, device=torch.device("cpu"), seed=1, reference=reference)
    sets = {}
    for mode in ("unused", "only", "added"):
        method = build_method("ce", clean_reference=mode)
        method.prepare(facts, None)
        sets[mode] = method.training_set(train)
    assert sets["unused"] is train
    assert len(sets["only"]) == len(reference) and (sets["only"].noisy_labels == reference.labels).all()
    added = sets["added"]
    assert len(added) == len(train) + len(reference)
    assert (added.noisy_labels[:len(train)] == noisy).all()  # the noisy part keeps its noisy labels
    assert (added.noisy_labels[len(train):] == reference.labels).all()
    with pytest.raises(ValueError, match="held-out"):
        build_method("ce", clean_reference="only").prepare(
            RunFacts(train=train, noise_rate=0.4, device=torch.device("cpu"), seed=1), None)
    with pytest.raises(ValueError, match="clean_reference"):
        build_method("ce", clean_reference="all")


def test_fewest_errors_threshold_and_the_oracle_option():
    from lnlkit.methods.osa import fewest_errors_threshold

    similarity = np.array([0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.7])
    is_noisy = np.array([True, True, False, True, False, False, False])
    # at 0.3: one clean pair below? none; one noisy pair (0.35) at or above -> 1 error, the fewest
    assert fewest_errors_threshold(similarity, is_noisy) == 0.3
    assert fewest_errors_threshold(similarity, np.zeros(7, bool)) == 0.1  # all clean: keep everything
    with pytest.raises(ValueError, match="threshold"):
        build_method("osa", estimator="proxy", threshold="median")
