"""The dashboard in a real browser: headless Chromium loads ``/`` from one node of a
running super-cluster (in-process nodes), the test reads the DOM it built (nodes and
edges drawn, per-node counts equal to each node's ``/varz``) and writes a screenshot to
``test-artifacts/dashboard.png``.

Chromium is looked up on the PATH; where it is missing and the test runs as root with
apt-get (a fresh CI machine), Debian's ``chromium`` is installed; otherwise the test is
skipped, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trio

import meshgate

from .supercluster import settle, supercluster
from .test_monitor import get

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """The Chromium binary, installed if need be and possible; else the test skips."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("MESHGATE_NO_INSTALL"):
        pytest.skip("Chromium is not installed (and MESHGATE_NO_INSTALL forbids installing it)")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("Chromium is not installed, and apt-get as root is not available to install it")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            check=True,
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"Chromium is not installed and apt-get install chromium failed: {exc}")
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("apt-get installed chromium but no chromium binary is on the PATH")
    return found


class DomReader(HTMLParser):
    """What the dashboard drew: SVG nodes and edges, and the node table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.svg_nodes: list[str] = []
        self.unreachable: list[str] = []
        self.edges: list[tuple[str, str, str]] = []
        self.rows: dict[str, dict[str, str]] = {}
        self.updates = 0
        self._row: str | None = None
        self._cell: str | None = None
        self._in_nodes = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "body":
            self.updates = int(a.get("data-updates", "0") or 0)
        if tag == "g" and "node" in classes:
            self.svg_nodes.append(a["data-name"])
            if "unreachable" in classes:
                self.unreachable.append(a["data-name"])
        if tag == "line" and ("route" in classes or "gateway" in classes):
            self.edges.append((classes[0], a.get("data-from", ""), a.get("data-to", "")))
        if tag == "table":
            self._in_nodes = a.get("id") == "nodes"
        if tag == "tr" and self._in_nodes and "data-name" in a:
            self._row = a["data-name"]
            self.rows[self._row] = {}
        if tag == "td" and self._row is not None and "clients" in classes:
            self._cell = "clients"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "table":
            self._in_nodes = False

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self.rows[self._row][self._cell] = data.strip()


async def chromium(binary: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={ARTIFACTS / '.chromium-profile'}",
            *args,
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_dashboard_in_headless_chromium() -> None:
    binary = find_chromium()
    ARTIFACTS.mkdir(exist_ok=True)

    def extra(cluster: str, i: int) -> dict[str, object]:
        return {"monitor_listen": "127.0.0.1:0"}

    with trio.fail_after(180):
        async with supercluster({"A": 2, "B": 1, "C": 1}, extra=extra) as sc:
            gws = [g for gs in sc.values() for g in gs]
            a0 = sc["A"][0]
            url = a0.monitor_url
            assert url
            async with (
                meshgate.connect(a0.client_url) as c1,  # type: ignore[arg-type]
                meshgate.connect(sc["B"][0].client_url) as c2,  # type: ignore[arg-type]
                meshgate.connect(sc["B"][0].client_url) as c3,  # type: ignore[arg-type]
                c1.subscribe("world.>"),
            ):
                await c2.publish("world.1", b"x")
                await settle(gws, [c1, c2, c3])
                done = await chromium(binary, "--virtual-time-budget=8000", "--dump-dom", url + "/")
                if done.returncode != 0 or b"<html" not in done.stdout:
                    pytest.fail(f"chromium failed ({done.returncode}): {done.stderr[-2000:]!r}")
                shot = ARTIFACTS / "dashboard.png"
                shot.unlink(missing_ok=True)
                await chromium(
                    binary,
                    "--virtual-time-budget=8000",
                    "--window-size=1400,2200",
                    f"--screenshot={shot}",
                    url + "/",
                )
                varz = {}
                for g in gws:
                    assert g.monitor_url
                    varz[g.config.name] = json.loads((await get(g.monitor_url, "/varz"))[1])
    dom = DomReader()
    dom.feed(done.stdout.decode())
    assert dom.updates >= 1, "the page never drew a document"
    assert sorted(dom.svg_nodes) == ["a0", "a1", "b0", "c0"]
    assert dom.unreachable == []
    assert ("route", "a0", "a1") in dom.edges
    gateways = {(f, t) for kind, f, t in dom.edges if kind == "gateway"}
    assert gateways == {(x, y) for x in "ABC" for y in "ABC" if x != y}
    # the table shows what each node's /varz says
    assert set(dom.rows) == {"a0", "a1", "b0", "c0"}
    for name, v in varz.items():
        assert dom.rows[name]["clients"] == str(v["connections"]), name
    assert dom.rows["b0"]["clients"] == "2"
    assert shot.exists(), "no screenshot written"
    assert shot.stat().st_size > 10_000


def card(dom: str, ident: str) -> str:
    found = re.search(rf'id="{ident}"><div class="value">([^<]*)</div>', dom)
    assert found, f"no card {ident}"
    return found.group(1)


async def test_demo_dashboard_shows_the_game_in_headless_chromium() -> None:
    """``meshgate demo --dashboard``: the page shows the flying demo, game layer included."""
    binary = find_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    argv = ["--clusters", "2", "--nodes", "2", "--clients", "40", "--duration", "600"]
    with subprocess.Popen(  # noqa: ASYNC220 - returns at once; lines are read in a thread
        [sys.executable, "-m", "meshgate", "demo", "--dashboard", *argv, "--rate", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = ""
            with trio.fail_after(120):
                while True:  # until the clients fly
                    line = await trio.to_thread.run_sync(proc.stdout.readline)
                    assert line, "the demo ended early"
                    if "dashboard: " in line:
                        url = line.split("dashboard: ", 1)[1].strip().rstrip("/")
                    if "t=" in line:
                        break
            assert url.startswith("http://127.0.0.1:")
            with trio.fail_after(120):
                done = await chromium(binary, "--virtual-time-budget=8000", "--dump-dom", url + "/")
                shot = ARTIFACTS / "dashboard-demo.png"
                shot.unlink(missing_ok=True)
                await chromium(
                    binary,
                    "--virtual-time-budget=8000",
                    "--window-size=1400,2600",
                    f"--screenshot={shot}",
                    url + "/",
                )
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            finally:
                if proc.returncode is None:
                    proc.kill()
    page = done.stdout.decode()
    dom = DomReader()
    dom.feed(page)
    assert sorted(dom.svg_nodes) == ["a0", "a1", "b0", "b1"]
    assert dom.unreachable == []
    clients = sum(int(r["clients"]) for r in dom.rows.values())
    assert clients >= 40  # the ships, and the region replicants
    # the game layer: every ship is owned by a region replicant; cells have interest
    assert card(page, "game-entities") == "40"
    owners = re.findall(r"<td>(region-[AB])</td><td>(\d+)</td>", page)
    assert {o for o, _ in owners} == {"region-A", "region-B"}
    assert sum(int(n) for _, n in owners) == 40
    assert re.search(r'class="cell"[^>]*data-count="[1-9]', page), "no cell with interest"
    # owners confirm most provisional updates (the demo's pilots cheat now and then)
    ratio = card(page, "game-ratio")
    assert ratio.endswith(" %")
    assert 50 < float(ratio[:-2]) < 100
    verdict = card(page, "game-verdict")
    assert verdict.endswith(" ms")
    assert float(verdict[:-3]) > 0
    assert shot.exists()
