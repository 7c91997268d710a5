"""bench/compare_commits.py's table, on made-up figures (the timed run is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "bench" / "compare_commits.py"

#: scenario -> (unit, control, old samples, new samples)
FIGURES: dict[str, tuple[str, bool, list[float], list[float]]] = {
    "rate 5 % lower": ("msg/s", False, [100, 100, 100], [95, 95, 95]),
    "rate 2 % lower": ("msg/s", False, [100, 100, 100], [98, 98, 98]),
    "latency 5 % higher": ("us", False, [100, 100, 100], [105, 105, 105]),
    "latency 5 % lower": ("us", False, [100, 100, 100], [95, 95, 95]),
    # the best new run is faster, the median is slower: medians decide
    "rate, one lucky run": ("msg/s", False, [100, 101, 99], [90, 96, 130]),
    "control 50 % lower": ("msg/s", True, [100, 100, 100], [50, 50, 50]),
}


def metric(scenario: str, unit: str, control: bool, value: float) -> dict[str, Any]:
    better = "lower" if unit == "us" else "higher"
    return {
        "bench": "node",
        "scenario": scenario,
        "unit": unit,
        "better": better,
        "control": control,
        "value": value,
    }


def document() -> dict[str, Any]:
    runs = []
    for rep in range(3):
        for side in ("old", "new"):
            metrics = [
                metric(name, unit, control, (old if side == "old" else new)[rep])
                for name, (unit, control, old, new) in FIGURES.items()
            ]
            runs.append(
                {"mode": "pure", "bench": "node", "repeat": rep, "side": side, "returncode": 0}
                | {"metrics": metrics}
            )
    # a failed run's figures are not counted
    failed = [metric("from a failed run", "msg/s", False, 1.0)]
    runs.append(
        {"mode": "pure", "bench": "node", "repeat": 2, "side": "new", "returncode": 1}
        | {"metrics": failed, "stderr_tail": "Traceback ...\nboom"}
    )
    return {"schema": 1, "repeats": 3, "runs": runs}


def test_the_table_flags_what_got_slower_in_each_direction(tmp_path: Path) -> None:
    doc = tmp_path / "figures.json"
    doc.write_text(json.dumps(document()))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--table", str(doc)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11 and cells[0] == "pure":
            rows[cells[2]] = cells
    assert set(rows) == set(FIGURES)
    flagged = {name for name, cells in rows.items() if "slower" in cells[10]}
    assert flagged == {"rate 5 % lower", "latency 5 % higher", "rate, one lucky run"}
    # old median, new median, new/old, change (+ is better, whatever the direction)
    assert rows["latency 5 % lower"][5:9] == ["100", "95.0", "0.950", "+5.0 %"]
    assert rows["latency 5 % higher"][8] == "-5.0 %"
    assert rows["rate, one lucky run"][5:8] == ["100", "96.0", "0.960"]
    assert rows["control 50 % lower"][10] == "control"
    assert "3 scenario(s) more than 3 % slower" in proc.stdout
    assert "FAILED: pure node repeat 3 new: exit 1 boom" in proc.stdout
