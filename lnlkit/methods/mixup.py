"""mixup (Zhang et al., ICLR 2018), a baseline in CausalNL's tables and Fig. 2.

Train on convex combinations of pairs of samples and of their (noisy) labels:
x = lam x_i + (1 - lam) x_j,  loss = lam CE(f(x), ỹ_i) + (1 - lam) CE(f(x), ỹ_j),  lam ~ Beta(alpha, alpha).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method


class Mixup(Method):
    """Parameters
    ----------
    alpha : float
        Beta(alpha, alpha) mixing distribution; 1 (uniform lam) as mixup used for CIFAR-10.
    """

    name = "mixup"

    def __init__(self, alpha: float = 1.0):
        if alpha <= 0:
            raise ValueError(f"mixup's alpha must be positive, got {alpha}")
        self.alpha = alpha

    def batch_loss(self, trainer, batch, epoch):
        # Drawn from torch's global generators (CPU and device), which checkpoints save and restore.
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        partner = torch.randperm(len(batch.noisy_labels), device=batch.inputs.device)
        mixed = lam * batch.inputs + (1 - lam) * batch.inputs[partner]
        with trainer.autocast():
            logits = trainer.networks[0](mixed).float()
        loss = lam * F.cross_entropy(logits, batch.noisy_labels) + \
            (1 - lam) * F.cross_entropy(logits, batch.noisy_labels[partner])
        return loss, torch.ones_like(batch.noisy_labels, dtype=torch.bool)

    def options(self):
        return {"alpha": self.alpha}
