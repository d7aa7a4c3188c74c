"""Co-teaching (Han et al., NeurIPS 2018).

Two networks; in every batch each keeps its (1 - tau_e) B smallest-loss samples and its
peer trains on them with cross-entropy. The paper's forget rate (Algorithm 1: R(T) =
1 - min(T tau / T_k, tau), updated after epoch T) is tau_e = tau * min(e / T_k, 1) for the
0-based epoch e, reaching the noise rate tau at e = T_k = 10.

The official code differs in three small ways, each an option (``official_code=True`` sets
all three): its ramp is ``linspace(0, tau, T_k)`` indexed by epoch (tau one epoch earlier),
it keeps ``int((1 - tau_e) B)`` samples (rounded down; we round to the nearest count), and it
divides the kept samples' mean loss again by their count.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Method


RAMPS = ("paper", "official")
ROUNDINGS = ("round", "floor")


def forget_rate(epoch: int, final_rate: float, ramp_epochs: int = 10, ramp: str = "paper") -> float:
    """tau_e for a 0-based epoch: the paper's tau * min(e / T_k, 1), or the official code's
    ``linspace(0, tau, T_k)[e]`` (tau from epoch T_k - 1 on)."""
    if ramp == "official":
        return float(np.linspace(0.0, final_rate, ramp_epochs)[epoch]) if epoch < ramp_epochs else final_rate
    return final_rate * min(epoch / ramp_epochs, 1.0)


def kept_count(batch_size: int, rate: float, rounding: str = "round") -> int:
    """How many of a batch's samples each network keeps at forget rate ``rate`` (at least 1)."""
    share = (1.0 - rate) * batch_size
    return max(1, int(share) if rounding == "floor" else int(round(share)))


def small_loss_mask(loss: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` smallest entries of ``loss``."""
    mask = torch.zeros_like(loss, dtype=torch.bool)
    mask[torch.argsort(loss)[:keep]] = True
    return mask


class CoTeaching(Method):
    """Parameters
    ----------
    rate : float or None
        Final forget rate tau; Han et al. set it to the (known or estimated) noise rate, which
        is what None takes from the run (for human labels the measured rate).
    ramp_epochs : int
        T_k, the epochs over which tau_e grows to tau (10).
    ramp : "paper" or "official"
        tau_e = tau * min(e / T_k, 1), or the official code's ``linspace(0, tau, T_k)[e]``.
    rounding : "round" or "floor"
        The kept count (1 - tau_e) B rounded to the nearest integer, or down (official code).
    official_loss_scaling : bool
        The official code divides each network's mean loss over selected samples again by
        their count; off by default (the paper's loss). With Adam this changes little.
    official_code : bool
        Shorthand for ``ramp="official"``, ``rounding="floor"`` and ``official_loss_scaling``.
    """

    name = "coteaching"
    num_networks = 2

    def __init__(self, rate: float | None = None, ramp_epochs: int = 10, ramp: str = "paper",
                 rounding: str = "round", official_loss_scaling: bool = False, official_code: bool = False):
        if official_code:
            ramp, rounding, official_loss_scaling = "official", "floor", True
        if rate is not None and not 0.0 <= rate < 1.0:
            raise ValueError(f"Co-teaching forget rate must lie in [0, 1), got {rate}")
        if ramp_epochs < 1:
            raise ValueError(f"Co-teaching's ramp_epochs must be at least 1, got {ramp_epochs}")
        if ramp not in RAMPS or rounding not in ROUNDINGS:
            raise ValueError(f"Co-teaching's ramp must be one of {RAMPS} and rounding one of {ROUNDINGS}, "
                             f"got {ramp!r} and {rounding!r}")
        self.rate, self.ramp_epochs, self.ramp, self.rounding = rate, ramp_epochs, ramp, rounding
        self.official_loss_scaling, self.official_code = official_loss_scaling, official_code

    def prepare(self, facts, stages) -> None:
        if self.rate is None:
            self.rate = float(facts.noise_rate)

    def select(self, losses, batch, epoch):
        if self.rate is None:
            raise ValueError("Co-teaching's forget rate is unknown: pass rate=... or run it through a trainer")
        tau_e = forget_rate(epoch, self.rate, self.ramp_epochs, self.ramp)
        keep = kept_count(len(losses[0]), tau_e, self.rounding)
        mask_1, mask_2 = (small_loss_mask(loss, keep) for loss in losses)
        return [mask_2, mask_1]  # each network trains on the samples its peer finds clean

    def reduce(self, losses, weights, masks):
        total = super().reduce(losses, weights, masks)
        return total / masks[0].sum() if self.official_loss_scaling else total

    def options(self):
        return {"rate": self.rate, "ramp_epochs": self.ramp_epochs, "ramp": self.ramp, "rounding": self.rounding,
                "official_loss_scaling": self.official_loss_scaling, "official_code": self.official_code}
