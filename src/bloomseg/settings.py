"""The accepted range of every numeric setting, declared once beside the setting.

A settings dataclass declares each numeric field with :func:`setting`; its ``check()``
calls :func:`check_ranges`, and the command line uses the same :class:`Range` as the
option's ``type``, so an out-of-range value is refused in one place, with one message,
whether it comes from Python or from the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from bloomseg.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts.

    Attributes:
        kind: ``int`` or ``float`` (floats must also be finite).
        low, high: bounds, None for none.
        low_open, high_open: the bound itself is excluded.
        words: words the setting also accepts, as themselves (``auto``).
    """

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    words: tuple[str, ...] = ()

    def describe(self) -> str:
        """The range in words: ``an integer >= 1``, ``a number in [0, 1)``."""
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            what = (f"{what} in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        elif self.low is not None:
            what = f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            what = f"{what} {'<' if self.high_open else '<='} {self.high:g}"
        return ", ".join((what, *self.words[:-1])) + f" or {self.words[-1]}" if self.words \
            else what

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is of the kind and within the bounds, or one of the words."""
        if isinstance(value, str) and value in self.words:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None
                    and (value >= self.high if self.high_open else value > self.high))

    def check(self, name: str, value: Any) -> None:
        """Raise ConfigError naming the setting and the range, unless ``value`` is in it."""
        if not self.contains(value):
            raise ConfigError(f"{name} must be {self.describe()}, got {value!r}")

    def outside(self) -> list[int | float]:
        """Values just outside the range (for tests that walk every option)."""
        step = 1 if self.kind is int else 0.5
        values = []
        if self.low is not None:
            values.append(self.kind(self.low) if self.low_open else self.kind(self.low - step))
        if self.high is not None:
            values.append(self.kind(self.high) if self.high_open else self.kind(self.high + step))
        return values

    def __call__(self, text: str) -> int | float:
        """Parse a command-line value (an argparse ``type``)."""
        if text in self.words:
            return text
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"{text} is not {self.describe()}")
        return value


POSITIVE_INT = Range(int, 1)
COUNT = Range(int, 0)


def setting(default: Any, accepted: Range) -> Any:
    """A dataclass field with a default and its accepted :class:`Range`."""
    return dataclasses.field(default=default, metadata={"range": accepted})


def range_of(cls: type, name: str) -> Range:
    """The :class:`Range` a settings dataclass declares for field ``name``."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["range"]


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of a dataclass."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).default


def check_ranges(settings: Any) -> None:
    """Check every field of a settings dataclass that declares a range (None passes
    where the field's type admits it: the setting is optional).

    Raises:
        ConfigError: naming the first setting out of its range.
    """
    for f in dataclasses.fields(settings):
        accepted = f.metadata.get("range")
        value = getattr(settings, f.name)
        if accepted is not None and not (value is None and "None" in str(f.type)):
            accepted.check(f.name, value)
