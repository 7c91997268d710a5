"""docs/protocol.md must list every opcode with the legality rules the code enforces."""

from __future__ import annotations

from pathlib import Path

from meshgate import ErrorCode
from meshgate.protocol import FRAME_TYPES, LEGAL_RECEIVE, ConnectionKind

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()


def test_every_opcode_row_matches_code() -> None:
    rows = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    assert set(rows) == {int(op) for op in FRAME_TYPES}
    for op, cls in FRAME_TYPES.items():
        _, name, typ, _, received, _ = rows[int(op)]
        assert name == f"`{op.name}`"
        assert typ == f"`{cls.__name__}`"
        legal = {k for k, ops in LEGAL_RECEIVE.items() if op in ops}
        if received == "every kind":
            assert legal == set(ConnectionKind)
        else:
            assert {ConnectionKind(k.strip(" `")) for k in received.split(",")} == legal


def test_every_error_code_is_documented() -> None:
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` |" in DOC
