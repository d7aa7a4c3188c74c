"""Methods that plug into :class:`lnlkit.trainer.Trainer`."""

from .base import Method
from .ce import CrossEntropy
from .coteaching import CoTeaching

METHODS = {"ce": CrossEntropy, "coteaching": CoTeaching}


def build_method(name: str, noise_rate: float | None = None, **options) -> Method:
    """A method by name; ``noise_rate`` feeds methods that need it (Co-teaching's forget rate)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    if name == "coteaching":
        options.setdefault("rate", noise_rate if noise_rate is not None else 0.0)
    return METHODS[name](**options)


__all__ = ["Method", "CrossEntropy", "CoTeaching", "METHODS", "build_method"]
