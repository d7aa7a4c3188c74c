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


def _as_none(value):
    if value is None or (isinstance(value, str) and value.lower() in _NONE):
        return None
    raise TypeError


def _as_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise TypeError


def _as_number(kind):
    def convert(value):
        if isinstance(value, bool):  # True is an int to Python, not a number to a user
            raise TypeError
        if isinstance(value, int) or (kind is float and isinstance(value, float)):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    return convert


def _as_str(value):
    if isinstance(value, str):
        return value
    raise TypeError


CONVERTERS = {type(None): _as_none, bool: _as_bool, int: _as_number(int), float: _as_number(float), str: _as_str}


def _coerce(value, allowed: tuple):
    """``value`` as the first of ``allowed`` it fits; strings (from the command line) are parsed."""
    for kind in allowed:
        if kind in CONVERTERS:
            try:
                return CONVERTERS[kind](value)
            except TypeError:
                continue
        if kind is object or isinstance(value, kind):
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
