"""Name registry of SSL methods: ``@register_method("mae")`` on a class, ``get_method("mae")`` to use it.

Methods register when their module is imported; ``nnssl.pretraining.methods`` imports every method
module explicitly, so an unknown name fails at argument parsing with the list of known names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nnssl.errors import NnsslError

T = TypeVar("T", bound=type)

_METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[T], T]:
    def decorator(cls: T) -> T:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"SSL method name '{name}' is already registered by {_METHODS[name].__name__}")
        _METHODS[name] = cls
        cls.method_name = name
        return cls

    return decorator


def available_methods() -> list[str]:
    import nnssl.pretraining.methods  # noqa: F401  (registers the built-in methods)

    return sorted(_METHODS)


def get_method(name: str) -> type:
    known = available_methods()
    if name not in _METHODS:
        raise NnsslError(f"unknown SSL method '{name}'; choose one of: {', '.join(known)}")
    return _METHODS[name]
