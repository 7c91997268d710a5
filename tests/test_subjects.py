from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate import InvalidSubjectError
from meshgate.subjects import (
    is_literal,
    is_valid_pattern,
    is_valid_subject,
    match,
    validate_pattern,
    validate_subject,
)
from meshgate.testing.strategies import patterns, subjects


def model_match(pattern: str, subject: str) -> bool:
    """Brute-force model written from the spec, recursive over token lists."""

    def rec(p: list[str], s: list[str]) -> bool:
        if not p:
            return not s
        if p[0] == ">":
            return len(p) == 1 and len(s) >= 1
        if not s:
            return False
        return (p[0] == "*" or p[0] == s[0]) and rec(p[1:], s[1:])

    return rec(pattern.split("."), subject.split("."))


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("a", True),
        ("a.b.c", True),
        ("ship.42.pos", True),
        ("fo*", True),
        ("a.b>", True),
        ("", False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        ("a b", False),
        ("a\tb", False),
        ("a.*", False),
        ("a.>", False),
        ("*", False),
        (">", False),
    ],
)
def test_subject_validity(s: str, ok: bool) -> None:
    assert is_valid_subject(s) is ok


@pytest.mark.parametrize(
    ("p", "ok"),
    [
        ("a.*", True),
        ("*", True),
        (">", True),
        ("a.>", True),
        ("*.*.>", True),
        ("fo*.bar", True),
        ("a.>.b", False),
        (">.a", False),
        ("a..*", False),
        ("", False),
        ("a *", False),
    ],
)
def test_pattern_validity(p: str, ok: bool) -> None:
    assert is_valid_pattern(p) is ok


def test_validators_name_input_and_rule() -> None:
    with pytest.raises(InvalidSubjectError, match=r"'a\.\*'.*wildcard") as info:
        validate_subject("a.*")
    assert isinstance(info.value, ValueError)
    assert info.value.value == "a.*"
    with pytest.raises(InvalidSubjectError, match="only allowed as the last token"):
        validate_pattern("a.>.b")
    with pytest.raises(InvalidSubjectError, match="must be a str"):
        validate_subject(42)
    with pytest.raises(InvalidSubjectError, match="longer than the maximum of 8"):
        validate_subject("a" * 9, max_length=8)
    assert validate_subject("a.b") == "a.b"
    assert validate_pattern("a.*") == "a.*"


@pytest.mark.parametrize(
    ("p", "s", "ok"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a", True),
        ("*", "a.b", False),
        ("fo*", "foo", False),
        ("fo*", "fo*", True),
        ("*.b.>", "a.b.c.d", True),
    ],
)
def test_match_examples(p: str, s: str, ok: bool) -> None:
    assert match(p, s) is ok


@given(patterns(), subjects())
def test_match_agrees_with_model(p: str, s: str) -> None:
    assert is_valid_pattern(p)
    assert is_valid_subject(s)
    assert match(p, s) is model_match(p, s)


@given(subjects())
def test_literal_pattern_matches_itself(s: str) -> None:
    assert is_literal(s)
    assert match(s, s)


@given(st.text(max_size=20))
def test_validity_never_raises_and_validators_agree(s: str) -> None:
    if is_valid_subject(s):
        assert validate_subject(s) == s
        assert is_valid_pattern(s)
    else:
        with pytest.raises(InvalidSubjectError):
            validate_subject(s)
