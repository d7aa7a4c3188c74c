"""Forward correction with an anchor-point estimate of T (Patrini et al., CVPR 2017).

Two phases in one run:

1. ``warmup_epochs`` epochs of cross-entropy on the noisy labels. The network then estimates
   the noisy posterior p(ỹ | x) of every training image, and :func:`anchor_point_transition`
   reads T from it: for each class the image most surely of that class (its "anchor") has
   p(ỹ | x) = T_i.
2. The remaining epochs minimise the forward-corrected loss -log (T^T softmax(f(x)))_ỹ with T
   fixed. With ``restart`` (the paper: a second network trained from scratch) the classifier
   and its optimizer start again from their initial state; the learning-rate schedule is the
   run's and continues where it is.

Model selection on the noisy validation split uses the same forward-corrected loss.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from ..transition import anchor_point_transition, forward_corrected_nll
from .base import Method


class Forward(Method):
    """Parameters
    ----------
    warmup_epochs : int or None
        Epochs of plain cross-entropy before T is estimated; None: a third of the run.
    quantile : float
        Each class's anchor is the image with the largest p(ỹ = i | x) below this quantile of
        the column: 0.97 as in the original code (skipping a few over-confident outliers), 1.0
        for the arg-max of the derivation.
    restart : bool
        Train the corrected classifier from its initial weights (the paper) or go on from the
        warm-up network.
    """

    name = "forward"
    num_networks = 1

    def __init__(self, warmup_epochs: int | None = None, quantile: float = 0.97, restart: bool = True):
        if warmup_epochs is not None and warmup_epochs < 1:
            raise ValueError(f"warmup_epochs must be at least 1, got {warmup_epochs}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
        self.warmup_epochs, self.quantile, self.restart = warmup_epochs, quantile, restart
        self.transition: torch.Tensor | None = None  # estimated at the end of the warm-up

    def setup(self, trainer) -> None:
        super().setup(trainer)
        epochs = trainer.config.epochs
        if self.warmup_epochs is not None and self.warmup_epochs >= epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) leaves no epoch for the corrected training "
                             f"(the run has {epochs})")
        if self.warmup_epochs is None:
            self.warmup_epochs = max(1, epochs // 3)
            if self.warmup_epochs >= epochs:
                warnings.warn(f"Forward: a {epochs}-epoch run has no epoch after the warm-up; it trains with "
                              "cross-entropy only", stacklevel=2)
        # Forward builds its networks and optimizers before any training: this is the initial state.
        self.initial = copy.deepcopy({"networks": [net.state_dict() for net in trainer.networks],
                                      "optimizers": [opt.state_dict() for opt in trainer.optimizers]})

    @torch.no_grad()
    def noisy_posterior(self) -> np.ndarray:
        """p(ỹ | x) of every training image (un-augmented) under network 0."""
        trainer = self.trainer
        net = trainer.networks[0]
        net.eval()
        probs = [trainer.logits(net, x).softmax(1) for _, x in trainer.train.batches(trainer.config.eval_batch_size)]
        return torch.cat(probs).cpu().numpy()

    def on_epoch_start(self, epoch: int) -> None:
        if epoch != self.warmup_epochs or self.transition is not None:
            return
        estimate = anchor_point_transition(self.noisy_posterior(), self.quantile)
        self.transition = torch.as_tensor(estimate, dtype=torch.float32, device=self.trainer.device)
        if self.restart:
            for net, state in zip(self.trainer.networks, self.initial["networks"]):
                net.load_state_dict(state)
            for optimizer, state in zip(self.trainer.optimizers, self.initial["optimizers"]):
                optimizer.load_state_dict(state)
            self.trainer._set_learning_rates(epoch)

    def _loss(self, logits, noisy_labels):
        if self.transition is None:  # warm-up: cross-entropy
            return torch.nn.functional.cross_entropy(logits.float(), noisy_labels, reduction="none")
        return forward_corrected_nll(logits, self.transition, noisy_labels)

    def batch_loss(self, trainer, batch, epoch):
        with trainer.autocast():
            logits = trainer.networks[0](batch.inputs)
        loss = self._loss(logits, batch.noisy_labels).mean()
        return loss, torch.ones_like(batch.noisy_labels, dtype=torch.bool)

    def validation_loss(self, logits, noisy_labels):
        return self._loss(logits, noisy_labels)

    def transition_estimate(self) -> np.ndarray | None:
        return None if self.transition is None else self.transition.cpu().numpy()

    def options(self) -> dict:
        # Settings only: the estimate changes during the run and goes into the result's "transition" entry.
        return {"warmup_epochs": self.warmup_epochs, "quantile": self.quantile, "restart": self.restart}

    def state_dict(self) -> dict:
        return {"transition": self.transition}

    def load_state_dict(self, state: dict) -> None:
        self.transition = state.get("transition")
