"""Name registry of SSL methods: ``@register_method("mae")`` on a class, ``get_method("mae")`` to use it.

Methods register when their module is imported (``register_method`` lives in ``methods.base``, which
every method imports, so no method module imports this one); ``nnssl.pretraining.methods`` imports every method
module explicitly, so an unknown name fails at argument parsing with the list of known names.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from nnssl.errors import NnsslError
from nnssl.pretraining.methods.base import REGISTERED_METHODS, register_method

__all__ = ["available_methods", "create_method", "get_method", "method_arguments", "parse_method_args",
           "register_method"]

def available_methods() -> list[str]:
    import nnssl.pretraining.methods  # noqa: F401  (registers the built-in methods)

    return sorted(REGISTERED_METHODS)


def get_method(name: str) -> type:
    known = available_methods()
    if name not in REGISTERED_METHODS:
        raise NnsslError(f"unknown SSL method '{name}'; choose one of: {', '.join(known)}")
    return REGISTERED_METHODS[name]


# constructor arguments every method takes from the loop, not from the user
_LOOP_ARGUMENTS = ("self", "patch_size", "num_input_channels")


def method_arguments(name: str) -> dict[str, Any]:
    """The settings a method accepts, with their defaults (its constructor's keyword arguments)."""
    parameters = inspect.signature(get_method(name).__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _LOOP_ARGUMENTS
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _typed(value: str, default: Any) -> Any:
    """``value`` converted to the type of the setting's default."""
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(value)
        return value.lower() in ("true", "1")
    return type(default)(value) if isinstance(default, (int, float)) else value


def parse_method_args(name: str, pairs: list[str]) -> dict[str, Any]:
    """``["mask_ratio=0.6", ...]`` -> ``{"mask_ratio": 0.6}``, typed like the defaults; unknown keys
    and unparsable values raise an NnsslError naming the method's settings."""
    known, settings = method_arguments(name), {}
    listing = ", ".join(f"{k}={v}" for k, v in known.items()) or "none"
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise NnsslError(f"--method-arg {pair!r}: method '{name}' takes key=value with a key of: {listing}")
        try:
            settings[key] = _typed(value.strip(), known[key])
        except ValueError:
            raise NnsslError(f"--method-arg {pair!r}: {value!r} is not of type {type(known[key]).__name__} "
                             f"(default {known[key]})") from None
    return settings


def create_method(name: str, patch_size: Sequence[int], num_input_channels: int, settings: dict[str, Any]):
    """The method ``name`` built with ``settings``; a bad setting is a one-line NnsslError."""
    method_class = get_method(name)
    unknown = sorted(set(settings) - set(method_arguments(name)))
    if unknown:
        raise NnsslError(f"method '{name}' has no setting {', '.join(unknown)}; its settings: "
                         f"{', '.join(method_arguments(name)) or 'none'}")
    try:
        return method_class(patch_size, num_input_channels, **settings)
    except ValueError as e:
        raise NnsslError(f"method '{name}': {e}") from None
