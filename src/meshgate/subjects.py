"""Subjects and subscription patterns, with NATS semantics.

A *subject* is what a message is published on: non-empty tokens separated by
``.``, with no whitespace, and no token that is exactly ``*`` or ``>``.

A *pattern* is what a subscription listens on: like a subject, except that a
token that is exactly ``*`` matches any one token, and a last token that is
exactly ``>`` matches one or more trailing tokens.  Wildcards are whole tokens
only: ``fo*`` is the literal token ``fo*``.

Everything here is pure and synchronous.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_SUBJECT_LENGTH",
    "InvalidSubjectError",
    "is_literal",
    "is_valid_pattern",
    "is_valid_subject",
    "match",
    "tokens_match",
    "validate_pattern",
    "validate_subject",
]

import re

from ._errors import InvalidSubjectError

#: Default upper bound on the length of a subject or pattern, in characters.
DEFAULT_MAX_SUBJECT_LENGTH = 1024

_WHITESPACE = re.compile(r"\s")


def _problem(s: object, *, wildcards: bool, max_length: int) -> str | None:
    """Return the rule ``s`` breaks, or ``None`` if it is valid."""
    if not isinstance(s, str):
        return f"must be a str, not {type(s).__name__}"
    if not s:
        return "must not be empty"
    if len(s) > max_length:
        return f"longer than the maximum of {max_length} characters"
    if _WHITESPACE.search(s) is not None:
        return "must not contain whitespace"
    toks = s.split(".")
    last = len(toks) - 1
    for i, tok in enumerate(toks):
        if not tok:
            return "tokens must be non-empty (no leading, trailing or doubled '.')"
        if tok == "*":
            if not wildcards:
                return "a publish subject must not contain the wildcard token '*'"
        elif tok == ">":
            if not wildcards:
                return "a publish subject must not contain the wildcard token '>'"
            if i != last:
                return "'>' is only allowed as the last token"
    return None


def is_valid_subject(s: object, *, max_length: int = DEFAULT_MAX_SUBJECT_LENGTH) -> bool:
    """True if ``s`` is a valid publish subject (no wildcard tokens)."""
    return _problem(s, wildcards=False, max_length=max_length) is None


def is_valid_pattern(p: object, *, max_length: int = DEFAULT_MAX_SUBJECT_LENGTH) -> bool:
    """True if ``p`` is a valid subscription pattern (``*`` any token, ``>`` last)."""
    return _problem(p, wildcards=True, max_length=max_length) is None


def validate_subject(s: object, *, max_length: int = DEFAULT_MAX_SUBJECT_LENGTH) -> str:
    """Return ``s`` if it is a valid publish subject, else raise :class:`InvalidSubjectError`."""
    rule = _problem(s, wildcards=False, max_length=max_length)
    if rule is not None:
        raise InvalidSubjectError(s, rule)
    assert isinstance(s, str)
    return s


def validate_pattern(p: object, *, max_length: int = DEFAULT_MAX_SUBJECT_LENGTH) -> str:
    """Return ``p`` if it is a valid subscription pattern, else raise :class:`InvalidSubjectError`."""
    rule = _problem(p, wildcards=True, max_length=max_length)
    if rule is not None:
        raise InvalidSubjectError(p, rule)
    assert isinstance(p, str)
    return p


def is_literal(pattern: str) -> bool:
    """True if a (valid) pattern has no wildcard token, so it matches only itself."""
    if "*" not in pattern and ">" not in pattern:
        return True
    return all(tok not in ("*", ">") for tok in pattern.split("."))


def tokens_match(ptoks: list[str] | tuple[str, ...], stoks: list[str] | tuple[str, ...]) -> bool:
    """Match pre-split pattern tokens against pre-split subject tokens."""
    n = len(ptoks)
    if n > len(stoks):
        return False
    for i, pt in enumerate(ptoks):
        if pt == ">":
            return i == n - 1 and len(stoks) > i
        if pt != "*" and pt != stoks[i]:
            return False
    return n == len(stoks)


def match(pattern: str, subject: str) -> bool:
    """True if the pattern ``pattern`` matches the literal subject ``subject``.

    Both arguments are assumed valid; validate untrusted input first.  A
    literal pattern matches only the identical subject.
    """
    if pattern == subject:
        return True
    return tokens_match(pattern.split("."), subject.split("."))
