"""Methods that plug into :class:`lnlkit.trainer.Trainer`."""

import inspect

from .base import Method
from .causalnl import CausalNL
from .ce import CrossEntropy
from .coteaching import CoTeaching
from .mixup import Mixup

METHODS = {"ce": CrossEntropy, "coteaching": CoTeaching, "mixup": Mixup, "causalnl": CausalNL}


def build_method(name: str, noise_rate: float | None = None, **options) -> Method:
    """A method by name; ``noise_rate`` feeds methods that need it (Co-teaching's forget rate)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    known = set(inspect.signature(METHODS[name]).parameters)
    if "rate" in known:  # a forget rate (Co-teaching, CausalNL) defaults to the noise rate
        options.setdefault("rate", noise_rate if noise_rate is not None else 0.0)
    if unknown := set(options) - known:
        raise ValueError(f"{name} has no option {sorted(unknown)}; its options are {sorted(known)}")
    return METHODS[name](**options)


__all__ = ["Method", "CrossEntropy", "CoTeaching", "Mixup", "CausalNL", "METHODS", "build_method"]
