import numpy as np
import pytest
import torch

from lnlkit.data import load_digits, validation_split
from lnlkit.methods import ParameterGroup, build_method
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


class _Scaled(build_method("ce").__class__):
    """CE on logits times a learned temperature trained by its own optimizer; a test-only method."""

    name = "scaled"

    def __init__(self, extra_copies: int = 0):
        self.extra_copies = extra_copies
        self.temperature = torch.nn.Parameter(torch.ones(()))

    def training_set(self, train):
        if not self.extra_copies:
            return train
        idx = np.r_[np.arange(len(train)), np.arange(self.extra_copies)]
        return train.subset(idx)  # extended by a stage-like step; clean labels travel along

    def parameter_groups(self, trainer):
        return [ParameterGroup("temperature", [self.temperature], optimizer="sgd", lr=0.5, momentum=0.0)]

    def batch_loss(self, trainer, batch, epoch):
        logits = trainer.networks[0](batch.inputs) * self.temperature
        loss = torch.nn.functional.cross_entropy(logits, batch.noisy_labels)
        return loss, torch.ones_like(batch.noisy_labels, dtype=torch.bool)

    def validation_loss(self, logits, noisy_labels):
        return torch.full((len(noisy_labels),), 7.0)

    def state_dict(self):
        return {"temperature": self.temperature.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.temperature.copy_(state["temperature"])


def _scaled_trainer(digits, epochs=3, **kwargs):
    noisy = make_noise("symmetric", digits.train, 0.2, seed=1).noisy
    train, val = validation_split(digits.train.with_noisy_labels(noisy), 0.1)
    cfg = train_config("smoke", "digits", epochs=epochs, schedule="multistep", milestones=(1,), gamma=0.1,
                       progress=False)
    return Trainer(_Scaled(**{k: v for k, v in kwargs.items() if k == "extra_copies"}), train, digits.test, cfg,
                   val=val, **{k: v for k, v in kwargs.items() if k != "extra_copies"})


def test_parameter_groups_have_their_own_optimizer_and_follow_the_schedule(digits):
    trainer = _scaled_trainer(digits, epochs=2)
    assert len(trainer.optimizers) == 2 and isinstance(trainer.optimizers[1], torch.optim.SGD)
    before = trainer.method.temperature.item()
    trainer.fit()
    assert trainer.method.temperature.item() != before
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)  # Adam 1e-3, x0.1 after epoch 1
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.05)  # its own 0.5, same schedule


def test_the_method_validation_loss_selects_the_model(digits):
    result = _scaled_trainer(digits, epochs=2).fit()
    assert all(h["val_loss"] == pytest.approx(7.0) for h in result.history)
    assert result.final["min_val_loss_epoch"] == 1  # ties: the first minimum


def test_a_method_may_extend_the_training_set_and_resume_keeps_its_own_optimizer(digits, tmp_path):
    trainer = _scaled_trainer(digits, extra_copies=50)
    assert len(trainer.train) == len(trainer.train.clean_labels) == 1200 - 120 + 50
    straight = trainer.fit()
    ckpt = tmp_path / "c.pt"
    _scaled_trainer(digits, extra_copies=50, checkpoint_path=ckpt).fit(until_epoch=1)
    resumed_trainer = _scaled_trainer(digits, extra_copies=50, checkpoint_path=ckpt)
    resumed = resumed_trainer.fit()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed_trainer.method.temperature.item() == trainer.method.temperature.item()


def test_a_second_phase_starts_from_the_first_phase_weights(digits, tmp_path):
    first = _scaled_trainer(digits, epochs=1)
    first.fit()
    path = first.save_weights(tmp_path / "phase1.pt")
    second = _scaled_trainer(digits, epochs=1, init_from=path)
    for p, q in zip(first.networks[0].parameters(), second.networks[0].parameters()):
        assert torch.equal(p, q)
    fresh = _scaled_trainer(digits, epochs=1)
    assert not all(torch.equal(p, q) for p, q in zip(first.networks[0].parameters(), fresh.networks[0].parameters()))
