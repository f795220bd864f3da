"""One validation layer: what a key accepts is declared once (:class:`Number`, :class:`Choice`), and a refused value
is one line, ``<key as the user typed it>=<value>: <what to use>``.

A component declares its keys' rules beside its code; the run layer checks the composed config against them before
anything is built (:func:`check_config`), and a component constructed without Hydra (a test, the benchmark) checks
its own arguments with the same rules (``RULE.check(key, value)``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer_lightning.errors import FERError

# what parsing a value of the wrong type or size raises (float(10**400): OverflowError)
_REFUSED = (TypeError, ValueError, OverflowError)


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Number:
    """An integer or a finite number, within bounds.

    Attributes:
        kind: ``int`` or ``float`` (which takes an int too); a bool is neither.
        low / high: the bounds, inclusive unless ``low_open`` / ``high_open``; None: unbounded.
        null: None is accepted (and returned).
        words: strings accepted as they are, e.g. ``("auto",)``.
        lenient: a string holding a number (an ``${oc.env:...}`` value) or an integral float (``3.0`` for an int)
            is accepted and converted; only where the caller uses the converted value, not the config's.
        fix: the whole advice after the colon, where the derived ``use an integer >= 1`` does not say enough.
        hint: appended to the derived advice, e.g. `` (0: online augmentation)``.
    """

    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False
    words: tuple[str, ...] = ()
    lenient: bool = False
    fix: str | None = None
    hint: str = ""

    def describe(self) -> str:
        """What to use, e.g. ``an integer >= 1`` or ``auto or a finite number in (0, 1)``."""
        what = "an integer" if self.kind is int else "a finite number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            if self.kind is int and not (self.low_open or self.high_open):
                what += f" from {_bound(low)} to {_bound(high)}"
            else:
                left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
                what += f" in {left}{_bound(low)}, {_bound(high)}{right}"
        elif low is not None:
            what += f" {'>' if self.low_open else '>='} {_bound(low)}"
        elif high is not None:
            what += f" {'<' if self.high_open else '<='} {_bound(high)}"
        words = " or ".join(self.words)
        return f"{words} or {what}" if words else what

    def parse(self, value: Any) -> Any:
        """``value`` as this rule's kind, or raises one of ``_REFUSED``."""
        if (value is None and self.null) or (isinstance(value, str) and value in self.words):
            return value
        if isinstance(value, str) and self.lenient:
            value = float(value.strip())
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(value)
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            raise ValueError(value)
        if self.kind is int:
            if not (isinstance(value, numbers.Integral) or (self.lenient and float(value).is_integer())):
                raise ValueError(value)
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise ValueError(value)
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise ValueError(value)
        return value

    def ok(self, value: Any) -> bool:
        try:
            self.parse(value)
        except _REFUSED:
            return False
        return True

    def check(self, key: str, value: Any, error: type[Exception] = FERError) -> Any:
        """``value`` converted to this rule's kind; else ``error`` (a library function's ValueError, say), one
        line naming ``key``."""
        try:
            return self.parse(value)
        except _REFUSED:
            raise error(f"{key}={value!r}: {self.advice()}") from None

    def advice(self) -> str:
        return self.fix if self.fix is not None else f"use {self.describe()}{self.hint}"


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values (compared as they are, so ``1`` is not ``"1"``); ``null``: None too."""

    choices: tuple[Any, ...]
    null: bool = False
    fix: str | None = None

    def check(self, key: str, value: Any, error: type[Exception] = FERError) -> Any:
        if (value is None and self.null) or value in self.choices:
            return value
        raise error(f"{key}={value!r}: {self.advice()}")

    def advice(self) -> str:
        return self.fix if self.fix is not None else f"use one of {', '.join(map(str, self.choices))}"


Rule = Number | Choice


def checked(rules: Mapping[str, Rule], key: str, value: Any, error: type[Exception] = FERError) -> Any:
    """``value`` checked (and converted) by ``rules[key]``: a component's argument, named as the config key."""
    return rules[key].check(key, value, error)


def check_config(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """Checks each dotted key of ``rules`` that ``cfg`` sets (an absent or null key is left to its default)."""
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            rule.check(key, value)
