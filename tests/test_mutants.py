"""The curated mutants of ``tools/mutants.py`` still apply to the source.

Running them is ``python tools/mutation_check.py`` (see docs/development.md); this
test only keeps the list from rotting as the code moves.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_mutants() -> tuple[object, ...]:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTANTS  # type: ignore[no-any-return]


def test_every_curated_mutant_applies_exactly_once() -> None:
    mutants = load_mutants()
    assert len(mutants) >= 12
    names = set()
    for m in mutants:
        text = (ROOT / "src" / "meshgate" / m.path).read_text()  # type: ignore[attr-defined]
        assert text.count(m.old) == 1, m.name  # type: ignore[attr-defined]
        assert m.old != m.new  # type: ignore[attr-defined]
        names.add(m.name)  # type: ignore[attr-defined]
    assert len(names) == len(mutants)
