"""The one shape of a config error: the dotted key, the value given, and what would have been valid.

Shared by every config dataclass (``data``, ``model``, ``cluster``, ``optim``, ``run``) so a bad
value reads the same whichever section it is in, and names the valid choices when there is a list.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any


def check(cond: bool, key: str, value: Any, expected: str) -> None:
    if not cond:
        raise ValueError(f"config value {key}={value!r} is invalid: expected {expected}")


def check_positive(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(isinstance(value, (int, float)) and value > 0, f"{section}.{name}", value, "a number > 0")


def check_count(name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` must be an integer >= 1 (a bool is not; None too when ``optional``): sizes, counts and workers of the
    estimators and jobs, which name the argument (``EmbedConfig.actors``) rather than a config key."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be {'None or ' if optional else ''}an integer >= 1, got {value!r}")


def check_name(key: str, value: Any, valid: Iterable[str]) -> None:
    """``value`` must be one of the registered ``valid`` names; the error lists them."""
    names = sorted(valid)
    check(value in names, key, value, f"one of the registered names: {', '.join(names)}")
