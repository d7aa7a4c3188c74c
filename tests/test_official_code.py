"""The official code's behaviours, pinned on small hand-made inputs.

Each test writes down what the released code computes (read from its source, re-derived here
by hand) and checks that the option named after it computes the same, while the default keeps
the paper's version.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlkit.estimators import CLIPEstimator, clip_tokenizer, pil_bicubic, tiny_clip
from lnlkit.methods import build_method
from lnlkit.methods.causalnl import CausalNL, gaussian_kl
from lnlkit.methods.coteaching import CoTeaching, forget_rate, kept_count
from lnlkit.methods.osa import official_weight

# ---------------------------------------------------------------- Co-teaching


def test_forget_rate_paper_ramp_against_the_official_linspace():
    tau = 0.4
    paper = [forget_rate(e, tau) for e in range(12)]
    official = [forget_rate(e, tau, ramp="official") for e in range(12)]
    # paper: R(T) = 1 - min(T tau / T_k, tau), updated after epoch T -> tau at the 0-based epoch 10
    assert paper == pytest.approx([tau * min(e / 10, 1) for e in range(12)])
    assert paper[9] == pytest.approx(0.36) and paper[10] == tau
    # official: np.linspace(0, tau, 10)[e] -> tau already at the 0-based epoch 9 (the tenth epoch)
    assert official[:10] == pytest.approx(list(np.linspace(0, tau, 10)))
    assert official[9] == pytest.approx(tau) and official[10:] == [tau, tau]
    assert forget_rate(0, tau, ramp_epochs=1, ramp="official") == 0.0  # linspace(0, tau, 1) == [0]


@pytest.mark.parametrize("tau, rounded, floored", [(0.3, 90, 89), (0.4, 77, 76), (0.2, 102, 102), (0.45, 70, 70)])
def test_kept_count_rounds_where_the_official_code_floors(tau, rounded, floored):
    # (1 - 0.3) * 128 = 89.6 and (1 - 0.4) * 128 = 76.8: the two rules differ by one sample
    assert kept_count(128, tau, "round") == rounded
    assert kept_count(128, tau, "floor") == floored == int((1 - tau) * 128)
    assert kept_count(4, 0.99, "floor") == 1  # never an empty selection


def test_official_coteaching_keeps_floor_and_divides_the_mean_again():
    torch.manual_seed(0)
    losses = [torch.rand(10), torch.rand(10)]
    paper, official = CoTeaching(rate=0.45), CoTeaching(rate=0.45, official_code=True)
    assert (official.ramp, official.rounding, official.official_loss_scaling) == ("official", "floor", True)
    epoch = 20  # past the ramp: tau_e = 0.45, (1 - 0.45) * 10 = 5.5 -> round 6, floor 5
    paper_masks, official_masks = paper.select(losses, None, epoch), official.select(losses, None, epoch)
    assert [int(m.sum()) for m in paper_masks] == [6, 6] and [int(m.sum()) for m in official_masks] == [5, 5]
    # the official loss: per network, mean CE over the peer's picks, divided again by their count
    expected = sum((loss * mask).sum() / mask.sum() for loss, mask in zip(losses, official_masks)) / 5
    assert official.reduce(losses, None, official_masks).item() == pytest.approx(expected.item())
    assert paper.reduce(losses, None, official_masks).item() == pytest.approx(5 * expected.item())
    assert official.options()["official_code"] is True


# ---------------------------------------------------------------- CausalNL


def test_gaussian_kl_without_the_half_is_twice_the_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    by_hand = -(1 + logvar - mu**2 - logvar.exp()).sum(dim=1)  # the code's term, before its weight 0.01
    assert torch.allclose(gaussian_kl(mu, logvar, half=False), by_hand)
    assert torch.allclose(gaussian_kl(mu, logvar), by_hand / 2)


def _official_loss(out, logits, x, noisy, tau):
    """One branch's loss as the official code writes it, re-derived by hand: 0.1 MSE + 0.1 CE of
    the noisy head + a constant entropy term + -0.01 sum(1 + log s^2 - mu^2 - s^2), plus the
    co-teaching loss: CE of network 1 on network 2's int((1 - tau) B) smallest-loss samples,
    mean over them, divided again by their count (and the same for network 2)."""
    total = 0.0
    for branch in range(2):
        o = out[branch]
        total = total + 0.1 * F.mse_loss(o["x_hat"], x) + 0.1 * F.cross_entropy(o["noisy_logits"], noisy)
        total = total - 0.01 * (1 + o["logvar"] - o["mu"] ** 2 - o["logvar"].exp()).sum()
    keep = int((1 - tau) * len(noisy))
    picks = [torch.argsort(F.cross_entropy(lg, noisy, reduction="none").detach())[:keep] for lg in logits]
    for net, peer in [(0, 1), (1, 0)]:
        total = total + F.cross_entropy(logits[net][picks[peer]], noisy[picks[peer]]) / keep
    return total


def _leaves(seed):
    g = torch.Generator().manual_seed(seed)
    n, c, z = 16, 4, 3
    out = [{"mu": torch.randn(n, z, generator=g), "logvar": torch.randn(n, z, generator=g) * 0.3,
            "x_hat": torch.rand(n, 1, 4, 4, generator=g), "noisy_logits": torch.randn(n, c, generator=g)}
           for _ in range(2)]
    logits = [torch.randn(n, c, generator=g) for _ in range(2)]
    for tensor in [*logits, *(v for o in out for v in o.values())]:
        tensor.requires_grad_(True)
    return out, logits, torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, c, (n,), generator=g)


def _ours(method, out, logits, x, noisy, epoch):
    elbo = sum(method.weights[k] * v for o, lg in zip(out, logits)
               for k, v in method.elbo_terms(o, lg, x, noisy).items())
    ce = [F.cross_entropy(lg, noisy, reduction="none") for lg in logits]
    masks = method.coteaching.select([loss.detach() for loss in ce], None, epoch)
    return elbo + method.coteaching.reduce(ce, None, masks)


def test_causalnl_official_code_reproduces_the_original_gradients():
    """With official_code=True every input of the loss gets the original code's gradient; the
    paper's loss (KL with its 1/2, batch mean, l1, mean co-teaching loss) does not."""
    tau, epoch = 0.3, 3  # inside the ramp: tau_e = linspace(0, 0.3, 10)[3] = 0.1
    gradients = {}
    for name in ("reference", "official", "paper"):
        out, logits, x, noisy = _leaves(seed=7)
        if name == "reference":
            loss = _official_loss(out, logits, x, noisy, float(np.linspace(0, tau, 10)[epoch]))
        else:
            loss = _ours(CausalNL(rate=tau, official_code=name == "official"), out, logits, x, noisy, epoch)
        leaves = [*logits, *(out[b][k] for b in range(2) for k in ("mu", "logvar", "x_hat", "noisy_logits"))]
        gradients[name] = torch.autograd.grad(loss, leaves)
    for ref, got in zip(gradients["reference"], gradients["official"]):
        assert torch.allclose(ref, got, atol=1e-6, rtol=1e-5)
    assert not all(torch.allclose(r, p, atol=1e-4) for r, p in zip(gradients["reference"], gradients["paper"]))


def test_causalnl_official_code_sets_coteaching_to_the_official_code_too():
    options = build_method("causalnl", rate=0.2, official_code=True).options()
    assert options["kl_half"] is False and options["kl_reduction"] == "sum" and options["official_code"]
    method = CausalNL(rate=0.2, official_code=True)
    assert (method.coteaching.ramp, method.coteaching.rounding, method.coteaching.official_loss_scaling) == (
        "official", "floor", True)
    paper = CausalNL(rate=0.2)
    assert (paper.kl_half, paper.coteaching.ramp, paper.coteaching.official_loss_scaling) == (True, "paper", False)


# ---------------------------------------------------------------- OSA


def test_official_scoring_gives_zero_weights_where_the_code_divides_zero_by_zero():
    below = torch.tensor([0.1, 0.2, 0.3])
    weights = official_weight(below, beta=0.3)  # the code: clamp -> all 0, then 0 / max(0) = NaN
    assert torch.equal(weights, torch.zeros(3))
    t = torch.tensor([0.2, 0.5, 0.8]) - 0.2  # otherwise: u = t / max t, w = u^2 (1 - u^2)
    u = t / t.max()
    assert torch.allclose(official_weight(torch.tensor([0.2, 0.5, 0.8]), 0.2), u**2 * (1 - u**2))


def test_pil_bicubic_resizes_8_bit_images_as_open_clip_does():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    resized = pil_bicubic(images, (20, 24))
    assert resized.shape == (3, 3, 20, 24)
    assert torch.equal(resized * 255, (resized * 255).round())  # 8-bit again, as PIL returns
    by_hand = np.asarray(Image.fromarray(images[1].numpy().transpose(1, 2, 0)).resize((24, 20), Image.BICUBIC))
    assert torch.equal((resized[1] * 255).round().byte(), torch.from_numpy(by_hand.transpose(2, 0, 1).copy()))
    flat = torch.full((1, 1, 8, 8), 77, dtype=torch.uint8)  # grey levels: one channel, constant stays constant
    assert torch.allclose(pil_bicubic(flat, (16, 16)), torch.full((1, 1, 16, 16), 77 / 255))
    tensor = F.interpolate(images.float() / 255, size=(20, 24), mode="bicubic", align_corners=False).clamp(0, 1)
    gap = (tensor - resized).abs().mean().item()
    assert 0 < gap < 0.05  # another kernel and the 8-bit rounding: close, not equal


def test_clip_estimator_official_preprocessing_changes_the_pixels_only():
    classes = ["cat", "dog"]
    tensor = CLIPEstimator(tiny_clip(image_size=32, context_length=16), clip_tokenizer(16), classes)
    official = CLIPEstimator(tiny_clip(image_size=32, context_length=16), clip_tokenizer(16), classes,
                             preprocessing="official")
    assert official.half == torch.float16 and tensor.half == torch.bfloat16
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(official._pixels(images), pil_bicubic(images, (32, 32)))
    assert not torch.equal(tensor._pixels(images), official._pixels(images))
    same_size = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(tensor._pixels(same_size), official._pixels(same_size))  # nothing to resize
    with pytest.raises(ValueError, match="preprocessing"):
        CLIPEstimator(tiny_clip(image_size=32, context_length=16), clip_tokenizer(16), classes, preprocessing="pil")
    with pytest.raises(ValueError, match="clip_preprocessing"):
        build_method("osa", clip_preprocessing="fp16")

