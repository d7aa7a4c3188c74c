"""Methods that plug into :class:`lnlkit.trainer.Trainer`."""

from .base import Method, ParameterGroup, RunFacts
from .causalnl import CausalNL
from .ce import CrossEntropy
from .coteaching import CoTeaching
from .mixup import Mixup
from .options import coerce_options
from .osa import OSA
from .forward import Forward
from .volminnet import VolMinNet
from .dtm import DTM
from .echoalign import EchoAlign

METHODS = {"ce": CrossEntropy, "coteaching": CoTeaching, "mixup": Mixup, "causalnl": CausalNL, "osa": OSA,
           "forward": Forward, "volminnet": VolMinNet, "dtm": DTM, "echoalign": EchoAlign}


def build_method(name: str, **options) -> Method:
    """A method by name, with its options (hyper-parameters); the facts of a run reach it in ``prepare``.

    Options are converted to the types the constructor declares ("false" -> False, "3" -> 3),
    and refused with a ValueError naming the option when they do not fit.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name](**coerce_options(name, METHODS[name], options))


__all__ = ["coerce_options", "Method", "ParameterGroup", "RunFacts", "CrossEntropy", "CoTeaching", "Mixup", "CausalNL", "OSA", "Forward", "VolMinNet", "DTM", "EchoAlign",
           "METHODS", "build_method"]
