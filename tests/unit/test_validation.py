"""The validation layer: a key's rule is declared once, and a refused value is one line naming the key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from fer_lightning.errors import FERError, Preempted, expected_error
from fer_lightning.validation import Choice, Number, check_config, checked


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (Number(int, 1), 3, 3),
        (Number(int, 1), np.int64(3), 3),
        (Number(int, 0, 5), 5, 5),
        (Number(float, 0, low_open=True), 2, 2.0),
        (Number(int, 1, null=True), None, None),
        (Number(int, 1, words=("auto",)), "auto", "auto"),
        (Number(int, 1, lenient=True), "4", 4),
        (Number(int, 1, lenient=True), 4.0, 4),
        (Number(int, 1), 10**400, 10**400),
        (Choice(("a", "b")), "b", "b"),
    ],
)
def test_an_accepted_value_comes_back_converted(rule, value, expected):
    got = rule.check("k", value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("rule", "value", "line"),
    [
        (Number(int, 1), 0, "k=0: use an integer >= 1"),
        (Number(int, 1), True, "k=True: use an integer >= 1"),
        (Number(int, 1), 3.0, "k=3.0: use an integer >= 1"),  # strict: the config keeps its float
        (Number(int, 1), "3", "k='3': use an integer >= 1"),
        (Number(int, 1, lenient=True), 3.5, "k=3.5: use an integer >= 1"),
        (Number(int, 0, 5), 6, "k=6: use an integer from 0 to 5"),
        (Number(float, 0, 1, high_open=True), 1.0, "k=1.0: use a finite number in [0, 1)"),
        (Number(float, 0, low_open=True), 0, "k=0: use a finite number > 0"),
        (Number(float, 1), math.inf, "k=inf: use a finite number >= 1"),
        (Number(float, 1), math.nan, "k=nan: use a finite number >= 1"),
        (Number(float, 1), 10**400, f"k={10**400}: use a finite number >= 1"),
        (Number(int, 0, words=("auto",), hint=" (0: none)"), -1, "k=-1: use auto or an integer >= 0 (0: none)"),
        (Number(int, 1, fix="say it otherwise"), 0, "k=0: say it otherwise"),
        (Choice(("a", "b")), "c", "k='c': use one of a, b"),
        (Choice(("a", "b")), None, "k=None: use one of a, b"),
    ],
)
def test_a_refused_value_is_one_line_naming_the_key(rule, value, line):
    with pytest.raises(FERError) as info:  # an expected error: exit 2, no traceback
        rule.check("k", value)
    assert str(info.value) == line and type(info.value) is FERError
    with pytest.raises(ValueError, match=r"^k="):  # what a library function raises instead
        rule.check("k", value, ValueError)


def test_check_config_names_the_dotted_key_and_skips_absent_ones():
    rules = {"a.b": Number(int, 1), "a.c": Number(int, 1), "missing.key": Number(int, 1)}
    check_config(OmegaConf.create({"a": {"b": 2, "c": None}}), rules)
    with pytest.raises(FERError, match=r"^a\.b=0: use an integer >= 1$"):
        check_config(OmegaConf.create({"a": {"b": 0}}), rules)
    assert checked(rules, "a.b", 7) == 7


def test_expected_error_unwraps_hydra_at_any_depth():
    cause = Preempted("stopped")
    inner = InstantiationException("inner")
    inner.__cause__ = cause
    outer = InstantiationException("outer")
    outer.__cause__ = inner
    assert expected_error(outer) is cause and expected_error(cause) is cause
    assert expected_error(InstantiationException("no cause")) is None and expected_error(KeyError("x")) is None
