"""Every example runs as a smoke test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip(), "an example should show what it did"
    # a normal shutdown is quiet: no replicant or connection failure on the way out
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()


def _pids(out: str) -> list[int]:
    return [int(m) for m in re.findall(r"pid (\d+)", out)]


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it is gone once reaped by init
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0
    except OSError:
        return True


def summary_rows(out: str) -> dict[str, list[str]]:
    """The demo's summary table: each row's label and its cells."""
    rows = {}
    for line in out.split("Summary", 1)[1].splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) >= 2:
            rows[parts[0]] = parts[1:]
    return rows


def test_demo_runs_and_prints_the_table() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshgate",
            "demo",
            "--clusters",
            "2",
            "--nodes",
            "2",
            "--clients",
            "24",
            "--duration",
            "2",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    rows = summary_rows(out)
    assert rows["route connections"] == ["2", "M*N(N-1)/2 = 2"]
    assert rows["outbound gateway connections"] == ["4", "M*N*(M-1) = 4"]
    assert rows["inbound gateway connections"][0] == "4"
    assert rows["game client connections"] == ["24"]
    assert rows["region replicants"][0] == "2"
    sent = int(rows["inputs sent (speculative moves)"][0])
    assert sent > 0
    # every input reached its owner exactly once, across hand-overs
    assert int(rows["inputs applied by owners"][0]) == sent
    assert int(rows["provisional relays received"][0]) > 0
    assert rows["protocol errors"] == ["0"]
    assert "ms /" in rows["relay latency p50 / p99"][0]
    # the nodes send the ships' state records as deltas against acknowledged state
    as_deltas, whole = map(int, rows["keyed values as deltas / whole"][0].split(" / "))
    assert whole > 0
    assert as_deltas >= 0
    assert int(rows["payload bytes saved by deltas"][0]) >= 0
    pids = _pids(out)
    assert len(pids) == 4
    assert all(_dead(p) for p in pids), "the demo left node processes behind"


def test_demo_on_a_nats_server_backbone() -> None:
    """The same demo game on nats-server clusters (the nodes attach as leaf nodes)."""
    from ._nats import nats_server_binary

    binary = nats_server_binary()  # installs it, or skips saying why
    env = {**os.environ, "PATH": f"{Path(binary).parent}:{os.environ.get('PATH', '')}"}
    argv = ["demo", "--backbone", "nats", "--clusters", "2", "--nodes", "2", "--clients", "24"]
    proc = subprocess.run(
        [sys.executable, "-m", "meshgate", *argv, "--duration", "2"],
        capture_output=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    rows = summary_rows(out)
    assert rows["leaf node connections"] == ["4", "one per node = 4"]
    assert "route connections" not in rows
    sent = int(rows["inputs sent (speculative moves)"][0])
    assert sent > 0
    assert int(rows["inputs applied by owners"][0]) == sent
    assert int(rows["provisional relays received"][0]) > 0
    assert rows["protocol errors"] == ["0"]
    pids = _pids(out)
    assert len(pids) == 6  # two nats-servers and four nodes
    assert all(_dead(p) for p in pids), "the demo left processes behind"


def test_demo_interrupted_leaves_no_process_behind() -> None:
    argv = ["demo", "--clusters", "2", "--nodes", "1", "--clients", "10", "--duration", "600"]
    with subprocess.Popen(
        [sys.executable, "-m", "meshgate", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        out = ""
        for line in proc.stdout:  # until the first progress line: the clients are flying
            out += line
            if "t=" in line:
                break
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.returncode is None:
                proc.kill()
    pids = _pids(out)
    assert len(pids) == 2
    assert all(_dead(p) for p in pids), "interrupting the demo left node processes behind"


def test_core_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_core.py"), "--quick"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "cache miss" in proc.stdout.decode()


def test_node_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_node.py"), "--quick", "--no-nats"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "request/reply p50" in proc.stdout.decode()


def test_supercluster_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_supercluster.py"), "--quick", "--no-nats"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "A -> B request/reply p50" in proc.stdout.decode()


def test_growth_benchmark_runs_and_plots(tmp_path: Path) -> None:
    figures = tmp_path / "growth.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_growth.py"),
            "--quick",
            "--json",
            str(figures),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "cache miss" in out
    assert "KiB per client" in out
    assert "3 x 3" in out
    svg = tmp_path / "growth.svg"
    plot = ROOT / "bench" / "plot_growth.py"
    subprocess.run([sys.executable, str(plot), str(figures), str(svg)], check=True, timeout=60)
    root = ElementTree.parse(svg).getroot()
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    doc = json.loads(figures.read_text())
    # one line per curve: hit, miss, memory, formation; a point per measurement
    assert len(lines) == 4
    counts = [len(line.get("points", "").split()) for line in lines]
    assert counts == [len(doc["subscriptions"])] * 2 + [
        len(doc["idle_clients"]),
        len(doc["formation"]),
    ]


def test_relay_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_relay.py"), "--quick"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "clients sustained with p99 <= 5 ms" in out
    assert "memory per idle client connection" in out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_javascript_game_client_plays_against_the_nats_game_node() -> None:
    """examples/nats: the node (Python) and the game client (stock nats.js, from npm)."""
    from ._npm import node_modules

    modules = node_modules()
    node = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "nats" / "game_node.py"), "0"],
        stdout=subprocess.PIPE,
        # the SIGINT below must interrupt it even where the tests run with SIGINT
        # ignored (a background job without job control), which the child inherits
        preexec_fn=_default_sigint,
    )
    try:
        assert node.stdout is not None
        url = node.stdout.readline().decode().strip()
        assert url.startswith("nats://"), url
        client = subprocess.run(
            ["node", str(ROOT / "examples" / "nats" / "game_client.cjs"), url],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "NODE_PATH": str(modules)},
        )
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)  # the node shuts down on SIGINT (a hang fails the test)
        finally:
            if node.poll() is None:  # do not leave it running for the next test
                node.kill()
                node.wait()
            node.stdout.close()  # type: ignore[union-attr]
    assert client.returncode == 0, client.stderr.decode()
    out = client.stdout.decode()
    assert 'provisional "bad"' in out
    assert 'corrected "fixed"' in out
    assert 'notice correction of my move 1: "fixed"' in out
