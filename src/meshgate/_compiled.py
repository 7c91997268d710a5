"""Whether the node core runs compiled (``tools/compile.py`` builds it with mypyc)."""

from __future__ import annotations

__all__ = ["COMPILED"]

from importlib.util import find_spec

_spec = find_spec("meshgate._core._fanout")

#: True when the node core runs as C extension modules built by mypyc
#: (``python tools/compile.py``), False for pure Python
COMPILED: bool = _spec is not None and not str(_spec.origin).endswith(".py")
