"""Methods that plug into :class:`lnlkit.trainer.Trainer`."""

import inspect

from .base import Method
from .causalnl import CausalNL
from .ce import CrossEntropy
from .coteaching import CoTeaching
from .mixup import Mixup
from .osa import OSA

METHODS = {"ce": CrossEntropy, "coteaching": CoTeaching, "mixup": Mixup, "causalnl": CausalNL, "osa": OSA}


def build_method(name: str, noise_rate: float | None = None, context: dict | None = None, **options) -> Method:
    """A method by name; ``noise_rate`` feeds methods that need it (Co-teaching's forget rate).

    ``context`` holds facts about the data (class names, a clean held-out split) that a method
    receives when its constructor asks for them by name (OSA's ``class_names``, ``reference``).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    known = set(inspect.signature(METHODS[name]).parameters)
    if "rate" in known:  # a forget rate (Co-teaching, CausalNL) defaults to the noise rate
        options.setdefault("rate", noise_rate if noise_rate is not None else 0.0)
    for key, value in (context or {}).items():
        if key in known:
            options.setdefault(key, value)
    if unknown := set(options) - known:
        raise ValueError(f"{name} has no option {sorted(unknown)}; its options are {sorted(known)}")
    return METHODS[name](**options)


__all__ = ["Method", "CrossEntropy", "CoTeaching", "Mixup", "CausalNL", "OSA", "METHODS", "build_method"]
