"""Hypothesis strategies for subjects and patterns (requires ``hypothesis``).

Use them to property-test your own subject schemes::

    from hypothesis import given
    from meshgate.testing.strategies import subjects, patterns

    @given(patterns(), subjects())
    def test_my_rule(p, s): ...

The token alphabet is small by default so that generated patterns and
subjects actually match each other often.
"""

from __future__ import annotations

__all__ = ["patterns", "subjects", "tokens"]

from hypothesis import strategies as st

_DEFAULT_TOKENS = ("a", "b", "c", "ship", "42", "pos", "fo*", "x>")


def tokens(alphabet: tuple[str, ...] = _DEFAULT_TOKENS) -> st.SearchStrategy[str]:
    """Literal tokens: drawn from ``alphabet`` or short random ones (never ``*`` or ``>``)."""
    rand = st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=".*>"),
        min_size=1,
        max_size=4,
    )
    return st.one_of(st.sampled_from(alphabet), rand) if alphabet else rand


def subjects(
    *, max_tokens: int = 5, alphabet: tuple[str, ...] = _DEFAULT_TOKENS
) -> st.SearchStrategy[str]:
    """Valid publish subjects."""
    return st.lists(tokens(alphabet), min_size=1, max_size=max_tokens).map(".".join)


@st.composite
def _patterns(draw: st.DrawFn, max_tokens: int, alphabet: tuple[str, ...]) -> str:
    n = draw(st.integers(1, max_tokens))
    toks = [draw(st.one_of(tokens(alphabet), st.just("*"))) for _ in range(n)]
    if draw(st.booleans()) and draw(st.booleans()):
        toks[-1] = ">"
    return ".".join(toks)


def patterns(
    *, max_tokens: int = 5, alphabet: tuple[str, ...] = _DEFAULT_TOKENS
) -> st.SearchStrategy[str]:
    """Valid subscription patterns, with ``*`` and a trailing ``>`` often enough."""
    return _patterns(max_tokens, alphabet)
