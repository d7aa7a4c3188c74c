"""Co-teaching (Han et al., NeurIPS 2018).

Two networks; in every batch each keeps its (1 - tau_e) B smallest-loss samples and its
peer trains on them with cross-entropy. The forget rate follows
tau_e = tau * min(e / T_k, 1)  (the paper's R(T) = 1 - tau_e, with exponent c = 1),
reaching the noise rate tau after T_k = 10 epochs.
"""

from __future__ import annotations

import torch

from .base import Method


def forget_rate(epoch: int, final_rate: float, ramp_epochs: int = 10) -> float:
    """tau_e for a 0-based epoch: the official code's linear ramp from 0 to ``final_rate``."""
    return final_rate * min(epoch / ramp_epochs, 1.0)


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
    official_loss_scaling : bool
        The official code divides each network's mean loss over selected samples again by
        their count; off by default (the paper's loss). With Adam this changes little.
    """

    name = "coteaching"
    num_networks = 2

    def __init__(self, rate: float | None = None, ramp_epochs: int = 10, official_loss_scaling: bool = False):
        if rate is not None and not 0.0 <= rate < 1.0:
            raise ValueError(f"Co-teaching forget rate must lie in [0, 1), got {rate}")
        if ramp_epochs < 1:
            raise ValueError(f"Co-teaching's ramp_epochs must be at least 1, got {ramp_epochs}")
        self.rate, self.ramp_epochs, self.official_loss_scaling = rate, ramp_epochs, official_loss_scaling

    def prepare(self, facts, stages) -> None:
        if self.rate is None:
            self.rate = float(facts.noise_rate)

    def select(self, losses, batch, epoch):
        if self.rate is None:
            raise ValueError("Co-teaching's forget rate is unknown: pass rate=... or run it through a trainer")
        keep = max(1, int(round((1 - forget_rate(epoch, self.rate, self.ramp_epochs)) * len(losses[0]))))
        mask_1, mask_2 = (small_loss_mask(loss, keep) for loss in losses)
        return [mask_2, mask_1]  # each network trains on the samples its peer finds clean

    def reduce(self, losses, weights, masks):
        total = super().reduce(losses, weights, masks)
        return total / masks[0].sum() if self.official_loss_scaling else total

    def options(self):
        return {"rate": self.rate, "ramp_epochs": self.ramp_epochs,
                "official_loss_scaling": self.official_loss_scaling}
