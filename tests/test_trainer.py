import numpy as np
import pytest
import torch

from lnlkit.data import load_digits, validation_split
from lnlkit.methods import build_method
from lnlkit.methods.coteaching import forget_rate, small_loss_mask
from lnlkit.noise import make_noise
from lnlkit.profiles import train_config
from lnlkit.trainer import DeviceData, TrainConfig, Trainer, lr_and_beta1


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_augment_crops_and_flips_on_device():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    data = DeviceData(np.zeros((2, 4, 4, 1), np.uint8), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    out = data.augment(x, padding=2, flip=True, generator=gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # Every output row is a (possibly shifted, mirrored, zero-padded) window of the input.
    for i in range(2):
        values = set(out[i].flatten().tolist()) - {0}
        assert values <= set(x[i].flatten().tolist())
    same = data.augment(x, 2, True, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    no_op = data.augment(x, 0, False, gen)
    assert torch.equal(no_op, x)


def test_coteaching_schedule():
    cfg = TrainConfig(epochs=200, decay_start=80, lr=1e-3)
    assert lr_and_beta1(cfg, 0) == (1e-3, 0.9)
    assert lr_and_beta1(cfg, 79) == (1e-3, 0.9)
    lr, beta1 = lr_and_beta1(cfg, 199)
    assert lr == pytest.approx(1e-3 / 120) and beta1 == 0.1
    multistep = TrainConfig(schedule="multistep", optimizer="sgd", lr=0.1, milestones=(30, 60))
    assert lr_and_beta1(multistep, 65)[0] == pytest.approx(1e-3)


def test_forget_rate_ramp_and_peer_exchange():
    assert forget_rate(0, 0.4) == 0 and forget_rate(5, 0.4) == pytest.approx(0.2) and forget_rate(30, 0.4) == 0.4
    losses = [torch.tensor([0.1, 5.0, 0.2, 4.0]), torch.tensor([3.0, 0.1, 2.0, 0.2])]
    assert small_loss_mask(losses[0], 2).tolist() == [True, False, True, False]
    method = build_method("coteaching", rate=0.5)
    masks = method.select(losses, None, epoch=20)
    assert masks[0].tolist() == [False, True, False, True]  # network 1 trains on network 2's picks
    assert masks[1].tolist() == [True, False, True, False]


def _run(digits, method, noisy, epochs, until=None, checkpoint=None, seed=1):
    cfg = train_config("smoke", "digits", epochs=epochs, seed=seed, progress=False)
    trainer = Trainer(build_method(method), digits.train.with_noisy_labels(noisy), digits.test, cfg, noise_rate=0.4,
                      checkpoint_path=checkpoint)
    return trainer.fit(until_epoch=until)


def test_seeded_runs_are_identical(digits):
    noisy = make_noise("symmetric", digits.train, 0.4, seed=1).noisy
    a, b = _run(digits, "ce", noisy, 2), _run(digits, "ce", noisy, 2)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["test_acc"] for h in a.history] == [h["test_acc"] for h in b.history]


def test_interrupted_and_resumed_run_matches_uninterrupted(digits, tmp_path):
    noisy = make_noise("idn", digits.train, 0.4, seed=1).noisy
    straight = _run(digits, "coteaching", noisy, 4)
    ckpt = tmp_path / "run.pt"
    partial = _run(digits, "coteaching", noisy, 4, until=2, checkpoint=ckpt)
    assert len(partial.history) == 2 and ckpt.exists()
    resumed = _run(digits, "coteaching", noisy, 4, checkpoint=ckpt)  # a fresh process would do the same
    keys = ["train_loss", "test_acc", "test_acc_per_network", "label_precision"]
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in straight.history]
    assert resumed.final == straight.final
    for p, q in zip(resumed.networks[1].parameters(), straight.networks[1].parameters()):
        assert torch.equal(p, q)


def test_checkpoint_with_another_config_is_refused(digits, tmp_path):
    noisy = make_noise("symmetric", digits.train, 0.4, seed=1).noisy
    _run(digits, "ce", noisy, 2, until=1, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="another configuration"):
        _run(digits, "ce", noisy, 2, checkpoint=tmp_path / "c.pt", seed=2)


def test_validation_split_reports_accuracy_at_min_val_loss(digits):
    noisy = make_noise("symmetric", digits.train, 0.2, seed=1).noisy
    train, val = validation_split(digits.train.with_noisy_labels(noisy), 0.1)
    cfg = train_config("smoke", "digits", epochs=2, progress=False)
    result = Trainer(build_method("ce"), train, digits.test, cfg, val=val).fit()
    assert "test_acc_at_min_val_loss" in result.final and result.history[0]["val_loss"] > 0
    assert "test_acc_oracle_best" in result.final and "test_acc_best" not in result.final


def test_coteaching_beats_ce_on_noisy_digits(digits):
    """The memorisation effect: with IDN-40 % labels, CE's late accuracy collapses, Co-teaching's does not."""
    noisy = make_noise("idn", digits.train, 0.4, seed=1).noisy
    ce = _run(digits, "ce", noisy, 30).final["test_acc_last10_mean"]
    ct = _run(digits, "coteaching", noisy, 30).final["test_acc_last10_mean"]
    assert ct > 0.85 and ct > ce + 0.1, (ce, ct)
