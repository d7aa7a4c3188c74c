"""The interface between a method and the trainer.

A method says how many classifiers ("networks") it trains and may change training through
these hooks:

- ``sample_weights(batch)``: a per-sample weight for the loss (OSA's re-weighting), or None;
- ``select(losses, batch, epoch)``: per network, a boolean mask of the samples it trains on
  (Co-teaching's small-loss exchange), or None for all samples;
- ``auxiliary_networks(trainer)``: extra modules trained beside the classifiers (CausalNL's
  encoders and decoders); the trainer optimises and checkpoints them;
- ``batch_loss(trainer, batch, epoch)``: the whole loss of one batch. The default is
  cross-entropy through the two hooks above; methods with another objective (mixup,
  CausalNL's ELBO) override it.

``reduce`` turns per-sample losses, weights and masks into the loss that is minimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Method:
    name = "method"
    num_networks = 1

    def setup(self, trainer) -> None:
        """Called once by the trainer, after its data and networks exist."""
        self.trainer = trainer

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def auxiliary_networks(self, trainer) -> list[nn.Module]:
        return []

    def batch_loss(self, trainer, batch, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss to minimise on ``batch`` and the mask of samples network 0 trained on."""
        with trainer.autocast():
            logits = [net(batch.inputs) for net in trainer.networks]
        losses = [F.cross_entropy(lg.float(), batch.noisy_labels, reduction="none") for lg in logits]
        weights = self.sample_weights(batch)
        masks = self.select([loss.detach() for loss in losses], batch, epoch)
        if masks is None:
            masks = [torch.ones_like(batch.noisy_labels, dtype=torch.bool)] * len(losses)
        return self.reduce(losses, weights, masks), masks[0]

    def sample_weights(self, batch) -> torch.Tensor | None:
        return None

    def select(self, losses: list[torch.Tensor], batch, epoch: int) -> list[torch.Tensor] | None:
        return None

    def reduce(self, losses, weights, masks) -> torch.Tensor:
        """Sum over networks of mean over selected samples of weight x loss (weights are not renormalised)."""
        total = 0.0
        for loss, mask in zip(losses, masks):
            weighted = loss if weights is None else weights * loss
            total = total + (weighted * mask).sum() / mask.sum().clamp_min(1)
        return total

    def options(self) -> dict:
        """The method's settings, recorded in result files."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
