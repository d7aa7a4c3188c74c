"""Method options: parsed and type-checked against the constructor's declared types, before any work.

``--option official_code False`` must mean False, not the truthy string "False"; ``--option
ramp_epochs abc`` must be refused at once, not after minutes of training. :func:`coerce_options`
turns command-line strings (and API values) into the type each option declares, or raises a
``ValueError`` that names the option and what it accepts.
"""

from __future__ import annotations

import inspect
import types
import typing

_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
_NONE = {"none", "null"}


def _declared(cls) -> dict:
    """Parameter -> (allowed types, default) from the constructor's annotations and defaults."""
    hints = typing.get_type_hints(cls.__init__)
    declared = {}
    for name, param in inspect.signature(cls).parameters.items():
        hint = hints.get(name)
        if hint is None:  # no annotation: the default's type (e.g. OSA's estimator="clip", or an object)
            allowed = (type(param.default),) if param.default is not inspect.Parameter.empty else (object,)
        elif isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            allowed = typing.get_args(hint)
        else:
            allowed = (hint,)
        declared[name] = (allowed, param.default)
    return declared


def _coerce(value, allowed: tuple):
    """``value`` as the first of ``allowed`` it fits; strings (from the command line) are parsed."""
    for kind in allowed:
        if kind is type(None):
            if value is None or (isinstance(value, str) and value.lower() in _NONE):
                return None
        elif kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind is str:
            if isinstance(value, str):
                return value
        elif kind is object or isinstance(value, kind):
            return value
    raise TypeError


def _describe(allowed: tuple) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    return " or ".join(words.get(kind, kind.__name__) for kind in allowed)


def coerce_options(method: str, cls, options: dict) -> dict:
    """Options of ``cls`` converted to their declared types; unknown names and wrong types raise ValueError."""
    declared = _declared(cls)
    if unknown := sorted(set(options) - set(declared)):
        raise ValueError(f"{method} has no option {unknown}; its options are {sorted(declared)}")
    coerced = {}
    for name, value in options.items():
        allowed, _ = declared[name]
        try:
            coerced[name] = _coerce(value, allowed)
        except TypeError:
            raise ValueError(f"option {name} of {method} must be {_describe(allowed)}, got {value!r}") from None
    return coerced
