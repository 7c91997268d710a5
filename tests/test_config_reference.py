"""The configuration reference (docs/config-reference.md) is generated from the config
definitions by tools/config_reference.py; this fails when the committed page is stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs

import meshgate

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "config_reference.py"
PAGE = ROOT / "docs" / "config-reference.md"


def test_the_committed_reference_is_what_the_tool_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_field_is_in_the_reference_with_its_comment() -> None:
    text = PAGE.read_text()
    for field in attrs.fields(meshgate.GatewayConfig):
        assert f"| `{field.name}` |" in text, field.name
    # a field's ``#:`` comment is its description
    assert "seconds over which a node in lame-duck mode" in text
    # reloadable fields are marked
    row = next(line for line in text.splitlines() if line.startswith("| `max_payload` |"))
    assert "| yes |" in row


def test_the_reference_is_linked_from_the_readme_and_the_docs_index() -> None:
    assert "docs/config-reference.md" in (ROOT / "README.md").read_text()
    assert "config-reference" in (ROOT / "docs" / "index.md").read_text()
