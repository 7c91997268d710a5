"""The tutorial's programs run as written and shut down quietly (no traceback)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parent.parent / "docs" / "tutorial.md"


def sections() -> dict[str, list[str]]:
    """The python code blocks of the tutorial, by section heading."""
    found: dict[str, list[str]] = {}
    for part in re.split(r"^## ", TUTORIAL.read_text(), flags=re.M)[1:]:
        heading = part.splitlines()[0]
        found[heading] = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    return found


def program(heading_start: str) -> str:
    """The section's code as a program: a complete one as it is, a fragment (it awaits
    at the top level) inside ``async def main()``."""
    (heading,) = [h for h in sections() if h.startswith(heading_start)]
    (code,) = sections()[heading]
    if "trio.run(" in code:
        return code
    body = textwrap.indent(code, "        ")
    return f"import trio\nimport meshgate\n\n\nasync def main():\n    with trio.fail_after(30):\n{body}\n\ntrio.run(main)\n"


@pytest.mark.parametrize("heading", ["1. Embed", "2. Add a second cluster", "5. The game layer"])
def test_a_tutorial_program_runs_and_shuts_down_quietly(heading: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", program(heading)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip(), "the program prints what it got"
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
