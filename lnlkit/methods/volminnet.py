"""VolMinNet (Li et al., ICML 2021): learn the classifier and one transition matrix T end to end.

T = volminnet_transition(W) = row-normalise(I + sigmoid(W) * (1 - I)) has a dominant diagonal
for any W. The loss is the forward-corrected NLL plus lambda times the volume log|det T|:

    L = -log (T^T softmax(f(x)))_ỹ + lambda log|det T|,      lambda = 1e-4.

Minimising the volume picks, among the matrices that explain the noisy posterior, the
smallest simplex that still contains every clean posterior; the paper proves it is the true T
when the clean posteriors are "sufficiently scattered", without anchor points. W has its own
optimizer (SGD with momentum 0.9 at lr 0.01 for CIFAR-10 in the paper; Adam for CIFAR-100 and
MNIST) and follows the classifier's schedule. The model is selected at the minimum
forward-corrected loss on a 10 % noisy validation split (the profiles set ``val_fraction``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..transition import forward_corrected_nll, log_volume, volminnet_transition
from .base import Method, ParameterGroup


class VolMinNet(Method):
    """Parameters
    ----------
    volume_weight : float
        lambda, the weight of log|det T| (1e-4 in the paper).
    w_init : float
        Initial value of every entry of W: -2 for CIFAR-10 (off-diagonal T about 0.11 / 1.95 per
        entry before normalisation), -4.5 for CIFAR-100.
    transition_optimizer, transition_lr : str, float
        W's own optimizer ("sgd" with momentum 0.9, or "adam") and learning rate.
    """

    name = "volminnet"
    num_networks = 1

    def __init__(self, volume_weight: float = 1e-4, w_init: float = -2.0, transition_optimizer: str = "sgd",
                 transition_lr: float = 0.01):
        if volume_weight < 0:
            raise ValueError(f"volume_weight must not be negative, got {volume_weight}")
        if transition_optimizer not in ("sgd", "adam"):
            raise ValueError(f"transition_optimizer must be 'sgd' or 'adam', got {transition_optimizer!r}")
        if not transition_lr > 0:
            raise ValueError(f"transition_lr must be positive, got {transition_lr}")
        self.volume_weight, self.w_init = volume_weight, w_init
        self.transition_optimizer, self.transition_lr = transition_optimizer, transition_lr

    def parameter_groups(self, trainer) -> list[ParameterGroup]:
        # Checkpoints keep W through state_dict below, its optimizer state with the trainer's.
        self.w = nn.ParameterList([nn.Parameter(torch.full((trainer.num_classes,) * 2, float(self.w_init),
                                                           device=trainer.device))])
        return [ParameterGroup("transition", list(self.w.parameters()), self.transition_optimizer,
                               self.transition_lr, momentum=0.9)]

    @property
    def transition(self) -> torch.Tensor:
        return volminnet_transition(self.w[0])

    def batch_loss(self, trainer, batch, epoch):
        with trainer.autocast():
            logits = trainer.networks[0](batch.inputs)
        t = self.transition
        loss = forward_corrected_nll(logits, t, batch.noisy_labels).mean() + self.volume_weight * log_volume(t)
        return loss, torch.ones_like(batch.noisy_labels, dtype=torch.bool)

    def validation_loss(self, logits, noisy_labels):
        with torch.no_grad():
            return forward_corrected_nll(logits, self.transition, noisy_labels)

    def transition_estimate(self) -> np.ndarray:
        return self.transition.detach().cpu().numpy()

    def options(self) -> dict:
        return {"volume_weight": self.volume_weight, "w_init": self.w_init,
                "transition_optimizer": self.transition_optimizer, "transition_lr": self.transition_lr}

    def state_dict(self) -> dict:
        return {"w": self.w[0].detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.w[0].copy_(state["w"])
