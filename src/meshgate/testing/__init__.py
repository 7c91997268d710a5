"""Helpers for testing code built on meshgate.

* :mod:`meshgate.testing.strategies` — hypothesis strategies for subjects and
  patterns (import it only where hypothesis is installed).
"""

from __future__ import annotations

__all__: list[str] = []
