"""Methods that plug into :class:`lnlkit.trainer.Trainer`."""

import inspect

from .base import Method, ParameterGroup, RunFacts
from .causalnl import CausalNL
from .ce import CrossEntropy
from .coteaching import CoTeaching
from .mixup import Mixup
from .osa import OSA

METHODS = {"ce": CrossEntropy, "coteaching": CoTeaching, "mixup": Mixup, "causalnl": CausalNL, "osa": OSA}


def build_method(name: str, **options) -> Method:
    """A method by name, with its options (hyper-parameters); the facts of a run reach it in ``prepare``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    known = set(inspect.signature(METHODS[name]).parameters)
    if unknown := set(options) - known:
        raise ValueError(f"{name} has no option {sorted(unknown)}; its options are {sorted(known)}")
    return METHODS[name](**options)


__all__ = ["Method", "ParameterGroup", "RunFacts", "CrossEntropy", "CoTeaching", "Mixup", "CausalNL", "OSA",
           "METHODS", "build_method"]
