import math

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from lnlkit.data import load_moons
from lnlkit.methods import build_method
from lnlkit.methods.causalnl import (OFFICIAL_CODE, CausalNL, build_branch, gaussian_kl, image_widths,
                                     negative_entropy, reconstruction_error)
from lnlkit.noise import make_noise
from lnlkit.profiles import train_config
from lnlkit.trainer import Batch, Trainer


@pytest.fixture(scope="module")
def moons():
    return load_moons()


@pytest.mark.parametrize("shape", [(32, 32, 3), (8, 8, 1), (2,)])
def test_every_network_has_the_right_shapes_and_gradients(shape):
    torch.manual_seed(0)
    classes, z_dim, n = 10, 5, 4
    branch = build_branch(shape, classes, z_dim)
    x = torch.rand(n, shape[2], shape[0], shape[1]) if len(shape) == 3 else torch.randn(n, *shape)
    y = torch.softmax(torch.randn(n, classes), 1)
    stats = branch.latent_encoder(x, y)
    assert stats.shape == (n, 2 * z_dim)
    x_hat = branch.image_decoder(y, stats[:, :z_dim])
    assert x_hat.shape == x.shape
    if len(shape) == 3:  # a sigmoid decoder for pixels in [0, 1]
        assert 0 <= x_hat.min() and x_hat.max() <= 1
    noisy_logits = branch.noisy_label_decoder(x_hat, y)
    assert noisy_logits.shape == (n, classes)
    (stats.sum() + noisy_logits.sum()).backward()
    for name, p in branch.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_conv_widths_follow_the_official_architecture():
    assert image_widths(32) == (32, 64, 128, 256)  # REFERENCE.md: 32 -> 2 spatial, 1024 features
    assert image_widths(8) == (32, 64)
    with pytest.raises(ValueError):
        image_widths(28)
    enc = build_branch((32, 32, 3), 10, 25).latent_encoder
    assert enc.out.in_features == 1024 and enc.out.out_features == 50


def test_kl_and_entropy_terms_match_closed_forms():
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-6)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))
    logits = torch.randn(6, 5)
    assert torch.allclose(negative_entropy(logits), -Categorical(logits=logits).entropy(), atol=1e-6)
    # KL(q || uniform) = sum q log q + log C; zero exactly at the uniform distribution
    uniform = Categorical(logits=torch.zeros(6, 5))
    kl_uniform = kl_divergence(Categorical(logits=logits), uniform)
    assert torch.allclose(negative_entropy(logits) + math.log(5), kl_uniform, atol=1e-6)
    x, x_hat = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)
    assert torch.allclose(reconstruction_error(x, x_hat, "l1"), torch.full((2,), 0.5))
    assert torch.allclose(reconstruction_error(x, x_hat, "mse"), torch.full((2,), 0.25))


def test_uniform_reparameterisation_is_biased_by_half_sigma():
    """The official code's z = mu + sigma * U(0, 1) has mean mu + sigma / 2, not mu."""
    torch.manual_seed(0)
    mu, logvar = torch.zeros(200_000, 1), torch.full((200_000, 1), math.log(4.0))  # sigma = 2
    paper, code = CausalNL(0.2), CausalNL(0.2, official_code=True)
    assert abs(paper.sample_latent(mu, logvar).mean().item()) < 0.02
    assert abs(code.sample_latent(mu, logvar).mean().item() - 1.0) < 0.02
    assert abs(code.sample_latent(mu, logvar).std().item() - 2 / math.sqrt(12)) < 0.02


def test_options_are_validated_and_official_code_sets_all_four():
    method = build_method("causalnl", rate=0.3, official_code=True)
    options = method.options()
    assert options["rate"] == 0.3 and all(options[k] == v for k, v in OFFICIAL_CODE.items())
    with pytest.raises(ValueError, match="reconstruction"):
        CausalNL(0.2, reconstruction="l2")
    with pytest.raises(ValueError, match="forget rate"):
        CausalNL(1.5)


def _trainer(moons, method="causalnl", epochs=3, seed=1, checkpoint=None, **options):
    noisy = make_noise("idn", moons.train, 0.45, seed=seed).noisy
    cfg = train_config("smoke", "moons", method, epochs=epochs, seed=seed, progress=False)
    return Trainer(build_method(method, **options), moons.train.with_noisy_labels(noisy), moons.test, cfg,
                   noise_rate=0.45, checkpoint_path=checkpoint)


def test_one_optimisation_step_lowers_the_loss(moons):
    trainer = _trainer(moons)
    x, y = trainer.train.normalise(trainer.train.inputs[:256]), trainer.train.noisy_labels[:256]
    batch = Batch(torch.arange(256), x, y)

    def loss_with_fixed_noise():
        torch.manual_seed(123)  # the same Gumbel and Gaussian draws before and after the step
        return trainer.method.batch_loss(trainer, batch, epoch=0)[0]

    before = loss_with_fixed_noise()
    (optimizer,) = trainer.optimizers
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss_with_fixed_noise().item() < before.item()
    terms = trainer.method.last_terms
    assert set(terms) == {"reconstruction", "noisy_label_nll", "negative_entropy", "kl_z"}
    assert terms["kl_z"] >= 0 and terms["reconstruction"] >= 0


@pytest.mark.parametrize("method", ["causalnl", "mixup"])
def test_seeded_runs_are_identical_and_resume_exactly(moons, method, tmp_path):
    a, b = _trainer(moons, method).fit(), _trainer(moons, method).fit()
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    ckpt = tmp_path / "run.pt"
    _trainer(moons, method, checkpoint=ckpt).fit(until_epoch=2)
    resumed = _trainer(moons, method, checkpoint=ckpt).fit()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in a.history]
    assert resumed.final == a.final


def test_causalnl_clears_a_pinned_accuracy_on_two_moons_idn45(moons):
    """The seeded smoke run (seed 1, 60 epochs): a regression check on the whole method.

    Measured about 88 % at the best epoch and 65 % over the last 10 (the method does not hold
    its early accuracy on this seed; the CausalNL chapter shows all seeds).
    """
    result = _trainer(moons, epochs=60).fit()
    assert result.final["test_acc_oracle_best"] > 0.85
    assert result.final["test_acc_last10_mean"] > 0.6
