"""The interface between a method and the trainer.

A method's life in a run, in order:

1. ``__init__(**options)``: its hyper-parameters only (the ``--option`` values); nothing about the data.
2. ``prepare(facts, stages)``: before training, with the facts of the run (:class:`RunFacts`:
   the noisy training set, a clean held-out split, the noise rate, the device). Expensive
   steps (training an estimator, scoring pairs, editing images) go through
   ``stages.run(name, depends_on, build)``, so they are cached and recorded
   (:mod:`lnlkit.stages`).
3. ``training_set(train)``: the set the classifier trains on; a stage may replace or extend
   it (EchoAlign's edited images). Clean labels stay attached for measurement only.
4. ``setup(trainer)``: once the networks exist. Then training, through these hooks:

- ``auxiliary_networks(trainer)``: extra modules trained with the classifiers' optimizer
  (CausalNL's encoders and decoders); checkpointed with them;
- ``parameter_groups(trainer)``: extra parameters with their *own* optimizer and learning
  rate (:class:`ParameterGroup`; VolMinNet's transition matrix);
- ``sample_weights(batch)``: a per-sample weight for the loss (OSA's re-weighting), or None;
- ``select(losses, batch, epoch)``: per network, a boolean mask of the samples it trains on
  (Co-teaching's small-loss exchange), or None for all samples;
- ``batch_loss(trainer, batch, epoch)``: the whole loss of one batch. The default is
  cross-entropy through the two hooks above; methods with another objective override it;
- ``validation_loss(logits, noisy_labels)``: the per-sample loss on the noisy validation
  split that selects the model (cross-entropy by default; forward-corrected for T-based
  methods).

``reduce`` turns per-sample losses, weights and masks into the loss that is minimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import LabelledData


@dataclass(frozen=True)
class RunFacts:
    """What a method may know about its run, given explicitly.

    ``train.noisy_labels`` are the labels to learn from; ``train.labels`` (clean) are there to
    *measure* a method (noise detection, label precision) and must not change what it does.
    """

    train: LabelledData
    noise_rate: float  # the nominal rate; for human labels the measured one, as is usual
    device: torch.device
    seed: int  # the training seed
    reference: LabelledData | None = None  # a clean held-out split (proxy external knowledge), if any
    model: str | None = None  # the classifier's architecture (a stage may train an encoder of the same shape)
    progress: bool = False  # show progress bars for long stages
    # The noisy validation split's images, never its labels: a self-supervised stage may learn from them.
    unlabelled_images: np.ndarray | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.train.classes)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


@dataclass
class ParameterGroup:
    """Parameters a method trains with their own optimizer (e.g. a transition matrix).

    With ``follow_schedule`` the learning rate is scaled by the same schedule factor as the
    classifiers' (multi-step decay, cosine, ...); otherwise it stays at ``lr``.
    """

    name: str
    params: list
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum or Adam's beta1
    weight_decay: float = 0.0
    follow_schedule: bool = True
    nesterov: bool = False  # SGD only

    def build(self) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=self.lr, betas=(self.momentum, 0.999),
                                    weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.nesterov)
        raise ValueError(f"parameter group {self.name!r}: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")


class Method:
    name = "method"
    num_networks = 1
    # Options that let the method run offline in the smoke profile (used by the contract test
    # and the docs), and whether it then needs a clean held-out split (``held_out`` > 0).
    example_options: dict = {}
    example_held_out: float = 0.0

    def prepare(self, facts: RunFacts, stages) -> None:
        """Before training: read the facts of the run, build or load stages."""

    def training_set(self, train: LabelledData) -> LabelledData:
        return train

    def setup(self, trainer) -> None:
        """Called once by the trainer, after its data and networks exist."""
        self.trainer = trainer

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def auxiliary_networks(self, trainer) -> list[nn.Module]:
        return []

    def parameter_groups(self, trainer) -> list[ParameterGroup]:
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

    def validation_loss(self, logits: torch.Tensor, noisy_labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss on the noisy validation split; its minimum over epochs selects the model."""
        return F.cross_entropy(logits.float(), noisy_labels, reduction="none")

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

    def transition_estimate(self):
        """The method's estimate of T(x) after training, for methods that estimate one: a (C, C) array
        (one T for all images), or (N, C, C) in the order of the training set; None otherwise."""
        return None

    def transition_references(self) -> dict:
        """Other estimates worth scoring beside the final one (name -> estimate, shaped as above)."""
        return {}

    def transition_groups(self):
        """(N,) group (cluster) of each training sample, for methods whose estimate is per group; or None."""
        return None

    def options(self) -> dict:
        """The method's settings (and what its stages measured), recorded in result files; JSON values only."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
