"""The experimental protocol: one-directional data flow, separate seeds, true T(x), cached runs."""

import numpy as np
import pytest

from lnlkit import noise
from lnlkit.run import experiment_data, run_experiment
from lnlkit.transition import transition_error


def _labels_by_image(data):
    """noisy label of each distinct image (images that occur once)."""
    keys = [x.tobytes() for x in data.inputs]
    counts = {k: keys.count(k) for k in set(keys)}
    return {k: y for k, y in zip(keys, data.noisy_labels) if counts[k] == 1}


def test_an_image_keeps_its_noisy_label_with_and_without_a_held_out_split():
    full = experiment_data(dataset="digits", noise="idn", rate=0.4, noise_seed=3)
    split = experiment_data(dataset="digits", noise="idn", rate=0.4, noise_seed=3, held_out=0.3, val_fraction=0.1)
    by_image = _labels_by_image(full.train)
    for part in (split.train, split.val):
        kept = _labels_by_image(part)
        assert kept and all(by_image[k] == y for k, y in kept.items() if k in by_image)
    assert split.reference.noisy_labels is not None and len(split.reference) == 360
    assert len(split.train) + len(split.val) + len(split.reference) == len(full.train)


def test_held_out_and_run_through_the_cli_name_the_same_noisy_labels(tmp_path):
    a = run_experiment(method="ce", dataset="digits", noise="idn", rate=0.4, seed=1, config_overrides={"epochs": 1},
                       save=False, progress=False)
    b = run_experiment(method="ce", dataset="digits", noise="idn", rate=0.4, seed=1, held_out=0.3,
                       config_overrides={"epochs": 1}, save=False, progress=False)
    by_image = {x.tobytes(): y for x, y in zip(a.trainer.train.inputs.cpu().numpy(), a.noisy_labels)}
    agree = [by_image[x.tobytes()] == y for x, y in zip(b.trainer.train.inputs.cpu().numpy(), b.noisy_labels)
             if x.tobytes() in by_image]
    assert len(agree) > 800 and all(agree)


def test_human_noise_with_a_held_out_split(shared_data):
    data = experiment_data(dataset="cifar10", noise="human", label_set="worst", held_out=0.3)
    assert len(data.train) == 35_000 and len(data.reference) == 15_000
    assert 0.38 < np.mean(data.train.noisy_labels != data.train.labels) < 0.42


def test_noise_seed_and_training_seed_are_separate():
    def run(noise_seed, seed):
        return run_experiment(method="ce", dataset="digits", noise="symmetric", rate=0.4, noise_seed=noise_seed,
                              seed=seed, config_overrides={"epochs": 2}, save=False, progress=False)

    base, other_training, other_noise = run(1, 1), run(1, 2), run(2, 1)
    assert np.array_equal(base.noisy_labels, other_training.noisy_labels)
    assert base.history[0]["train_loss"] != other_training.history[0]["train_loss"]
    assert not np.array_equal(base.noisy_labels, other_noise.noisy_labels)
    assert (base.record["run"]["noise_seed"], other_training.record["run"]["seed"]) == (1, 2)


def test_cached_run_is_loaded_not_retrained(fresh_cache):
    kwargs = dict(method="coteaching", dataset="digits", noise="idn", rate=0.4, seed=1,
                  config_overrides={"epochs": 2}, save=False, progress=False, cache=True)
    first, second = run_experiment(**kwargs), run_experiment(**kwargs)
    assert "loaded_from_cache" not in first.record and second.record["loaded_from_cache"] is True
    assert second.history == first.history
    np.testing.assert_array_equal(second.predict_proba(), first.predict_proba())
    other = run_experiment(**kwargs | {"seed": 2})
    assert "loaded_from_cache" not in other.record


def test_estimable_rows_keep_what_the_image_determines(fake_images):
    images, labels = fake_images
    x = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    idn = noise.instance_dependent_noise(x, labels, 10, 0.4, seed=1)
    realised, estimable = idn.realised_rows, idn.estimable_rows
    assert np.allclose(estimable.sum(1), 1) and np.allclose(estimable[np.arange(len(labels)), labels],
                                                           1 - idn.mean_flip_rate)
    # A perfect estimate of T(x) is off the realised row by exactly 2 |q_i - eps_bar| (q_i does not depend on x).
    error = transition_error(estimable, realised, labels)
    np.testing.assert_allclose(error["per_instance"], 2 * np.abs(idn.flip_rates - idn.mean_flip_rate), atol=1e-5)
    assert 0.12 < error["mean"] < 0.2  # sd 0.1: E|q - q_bar| = 0.1 sqrt(2/pi) ~ 0.08
    assert transition_error(estimable, estimable, labels)["mean"] == 0
    # The whole matrix T(x): the clean class's row is the estimable row.
    full = idn.estimable_transition(x[:50])
    np.testing.assert_allclose(full[np.arange(50), labels[:50]], estimable[:50], atol=1e-5)
    assert np.allclose(full.sum(2), 1)


def test_transition_error_per_class_of_a_class_level_estimate():
    labels = np.array([0, 0, 1, 1])
    truth = np.array([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.0, 1.0]])
    T_hat = np.array([[0.9, 0.1], [0.0, 1.0]])
    error = transition_error(T_hat[labels], truth, labels)
    np.testing.assert_allclose(error["per_class"], [0.2, 0.0])
    with pytest.raises(ValueError, match="rows"):
        transition_error(T_hat, truth, labels)
