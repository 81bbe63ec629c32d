"""Ranges of numeric settings: one declaration, checked in Python and on the command line."""

from __future__ import annotations

import argparse
import math

import pytest

from bloomseg.errors import ConfigError
from bloomseg.inference.options import InferenceOptions
from bloomseg.settings import Range, check_ranges, range_of


@pytest.mark.parametrize("accepted, text, inside, outside", [
    (Range(int, 1), "an integer >= 1", [1, 7, 10**9], [0, -3, 1.0, True, "2"]),
    (Range(float, 0, 1, high_open=True), "a number in [0, 1)", [0, 0.5, 0.999], [1, -0.1, math.nan]),
    (Range(float, 0, low_open=True), "a number > 0", [1e-9, 3, 1e300], [0, -1, math.inf]),
    (Range(int, 14, 4096), "an integer in [14, 4096]", [14, 4096], [13, 4097]),
])
def test_a_range_says_what_it_accepts(accepted, text, inside, outside):
    assert accepted.describe() == text
    assert all(accepted.contains(v) for v in inside)
    assert not any(accepted.contains(v) for v in outside)
    assert all(not accepted.contains(v) for v in accepted.outside())
    with pytest.raises(ConfigError, match=f"^width must be {text.replace('[', '.').replace(')', '.')}"):
        accepted.check("width", outside[0])


def test_the_command_line_parses_with_the_same_range():
    accepted = Range(int, 1, 8)
    assert accepted("3") == 3
    for text in ("0", "9", "2.5", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="an integer in \\[1, 8\\]"):
            accepted(text)


def test_dataclass_fields_are_checked_by_their_declared_range():
    assert range_of(InferenceOptions, "overlap").describe() == "a number in [0, 1)"
    check_ranges(InferenceOptions())
    with pytest.raises(ConfigError, match="^sigma must be a number > 0, got 0"):
        check_ranges(InferenceOptions(sigma=0))
