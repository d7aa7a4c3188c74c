"""Cross-entropy on the noisy labels: the baseline every paper reports.

With ``clean_reference`` CE becomes the control for methods that use a clean held-out split
(OSA's proxy estimator is trained on one): ``"only"`` trains on that clean split alone,
``"added"`` on the noisy training set plus the clean split with its clean labels. Both need a
run with ``held_out`` > 0; the default ``"unused"`` leaves the split aside, as plain CE.
"""

import numpy as np

from ..data import LabelledData
from .base import Method

CLEAN_REFERENCE = ("unused", "only", "added")


class CrossEntropy(Method):
    name = "ce"
    num_networks = 1
    # class-level defaults: subclasses that keep CE's loss need not call this __init__
    clean_reference = "unused"
    reference: LabelledData | None = None

    def __init__(self, clean_reference: str = "unused"):
        if clean_reference not in CLEAN_REFERENCE:
            raise ValueError(f"clean_reference must be one of {CLEAN_REFERENCE}, got {clean_reference!r}")
        self.clean_reference = clean_reference

    def prepare(self, facts, stages) -> None:
        if self.clean_reference != "unused" and facts.reference is None:
            raise ValueError(f"CE with clean_reference={self.clean_reference!r} trains on the clean held-out "
                             "split: run with held_out > 0 (command line: --held-out 0.3)")
        self.reference = facts.reference

    def training_set(self, train: LabelledData) -> LabelledData:
        if self.clean_reference == "unused":
            return train
        clean = self.reference.with_noisy_labels(self.reference.labels)  # its labels are the clean ones
        if self.clean_reference == "only":
            return clean
        return LabelledData(np.concatenate([train.inputs, clean.inputs]),
                            np.concatenate([train.labels, clean.labels]), train.classes, train.name, train.source,
                            dict(train.meta), np.concatenate([train.noisy_labels, clean.noisy_labels]))

    def options(self) -> dict:
        return {"clean_reference": self.clean_reference}
