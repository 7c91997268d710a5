"""Compare two revisions of meshgate on one machine in one run: did anything get slower?

    python bench/compare_commits.py                        # old 9ac17b3, new HEAD, 5 repeats
    python bench/compare_commits.py --old REV --new PATH   # revisions or working trees
    python bench/compare_commits.py --quick                # smoke run, tiny counts, 2 repeats
    python bench/compare_commits.py --keep                 # keep trees, venvs, builds for next time
    python bench/compare_commits.py --table FILE.json      # the table of an earlier run

Each side (old, new) is a revision of the repository this script is in, exported with
``git archive`` into a throwaway tree, or a working tree given by its path (copied, with
its uncommitted files; the copy is what is measured, the tree itself is not touched).
Each side gets a venv of its own (its library installed editable, and mypy for mypyc),
and a second copy of its tree compiled with that tree's own ``tools/compile.py``.
Then, per mode (pure Python, compiled) and per benchmark, old and new alternate, one
invocation each, ``--repeat`` times (ABAB...):

* ``bench_core.py``: every scenario (in-process rates);
* ``bench_node.py``: meshgate's own protocol and its NATS port (``--nats`` adds
  nats-server, as a control: it is the same binary on both sides, so its ratio shows
  how much the machine drifted);
* ``bench_relay.py``: a fixed load (``--relay-steps``, ``--relay-seconds``): p50 and p99
  latency, the node's CPU time per delivery, memory per idle client.

Each invocation runs one warm-up and one measured repeat (the scripts' own
``--repeat 1``).  The bench scripts of both sides are compared first: where they are
the same, or where the new tree's run against the old library, the new tree's scripts
measure both libraries (the load generator is the same code); otherwise each side runs
its own, and the output says which.  The load generators use the measured side's
codecs (``meshgate.protocol``), so a codec change shows in the generator's share too.

Output: every run's figures as JSON in ``bench/results/compare-<old>-<new>-<date>.json``
(with the machine's cores, Python and load), and a markdown table: per scenario the
median of old, the median of new, new/old, the change (+ is better, whatever the
direction) and a flag where new is more than ``--threshold`` (3 %) slower: a rate
lower, or a latency, CPU time or memory higher.  Medians only, never best runs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OLD = "9ac17b3"
MODES = ("pure", "compiled")
BENCHES = ("core", "node", "relay")
#: each benchmark's script, then the files of ``bench/`` it runs or imports
SCRIPTS = {
    "core": ("bench_core.py",),
    "node": ("bench_node.py", "_serve_node.py"),
    "relay": ("bench_relay.py", "bench_node.py", "_profile.py"),
}
#: bench_node's server keys, as the table names them
NODE_COLUMNS = {"meshgate": "meshgate", "meshgate-nats": "NATS port", "nats": "nats-server"}
#: units where lower is better (everything else is a rate: higher is better)
LOWER_IS_BETTER = {"us", "ms", "us CPU/delivery", "KiB/client"}
SCHEMA = 1


# -- the sides ------------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of the comparison: where it comes from, its trees and its venv."""

    role: str  # "old" or "new"
    spec: str  # as given: a revision or a path
    sha: str
    label: str
    path: Path | None = None  # a working tree given by path (copied), else a revision
    key: str = ""
    trees: dict[str, Path] = field(default_factory=dict)  # mode -> tree
    venv: Path = Path()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def root(self) -> Path:
        return self.trees["pure"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(role: str, spec: str, repo: Path) -> Side:
    """A revision of ``repo``, or a working tree (a directory with a pyproject.toml)."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "pyproject.toml").is_file():
        path = path.resolve()
        try:
            sha = git(path, "rev-parse", "HEAD")
            dirty = bool(git(path, "status", "--porcelain", "--untracked-files=no"))
        except SystemExit:
            sha, dirty = "0" * 40, True
        label = f"{sha[:7]}-wt"
        key = "wt-" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
        return Side(role, spec, sha, label, path, key, info={"dirty": dirty})
    sha = git(repo, "rev-parse", "--verify", f"{spec}^{{commit}}")
    return Side(role, spec, sha, sha[:7], None, sha[:12])


def tree_files(path: Path) -> list[str]:
    """The files of a working tree worth copying: tracked and untracked, not ignored."""
    if (path / ".git").exists():
        out = subprocess.run(
            ["git", "-C", str(path), "ls-files", "-z", "-co", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted(f for f in set(out.split("\0")) if f and (path / f).is_file())
    skip = {".venv", ".git", "__pycache__", "build", ".mypy_cache"}
    return sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(path).parts) and p.suffix != ".so"
    )


def fingerprint(side: Side) -> str:
    """What the side's tree is made of: the commit, or the working tree's content."""
    if side.path is None:
        return side.sha
    h = hashlib.sha256()
    for rel in tree_files(side.path):
        h.update(rel.encode() + b"\0" + (side.path / rel).read_bytes() + b"\0")
    return "wt-" + h.hexdigest()


def export(side: Side, repo: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    if side.path is None:
        data = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", side.sha],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest)
        return
    for rel in tree_files(side.path):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(side.path / rel, target)


def marker(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def side_env(side: Side, mode: str) -> dict[str, str]:
    """The environment a side's library runs in: its venv, and its tree for ``mode``
    first on the path (pure: the exported tree, compiled: the built copy)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(side.venv)
    env["PATH"] = f"{side.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(side.trees[mode] / "src")
    env["PYTHONHASHSEED"] = "0"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def mypy_requirement(tree: Path) -> str:
    """mypy as the tree's ``lint`` dependency group pins it (mypyc comes with it)."""
    try:
        groups = tomllib.loads((tree / "pyproject.toml").read_text()).get("dependency-groups", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "mypy"
    for req in groups.get("lint", []):
        if isinstance(req, str) and re.match(r"mypy\b", req):
            return req
    return "mypy"


def prepare(side: Side, repo: Path, workdir: Path, python: str) -> None:
    """The side's pure tree and its venv, made or (``--keep``) reused."""
    fp = fingerprint(side)
    pure = workdir / f"tree-{side.key}-pure"
    side.trees["pure"] = pure
    side.trees["compiled"] = workdir / f"tree-{side.key}-compiled"
    if marker(pure / ".compare-fingerprint") != fp:
        shutil.rmtree(pure, ignore_errors=True)
        log(f"{side.role}: exporting {side.spec} ({side.label}) to {pure}")
        export(side, repo, pure)
        (pure / ".compare-fingerprint").write_text(fp)
    side.info["fingerprint"] = fp
    side.venv = workdir / f"venv-{side.key}"
    want = hashlib.sha256(
        (pure / "pyproject.toml").read_bytes() + python.encode() + str(pure).encode()
    ).hexdigest()
    if marker(side.venv / ".compare-key") != want:
        shutil.rmtree(side.venv, ignore_errors=True)
        log(f"{side.role}: creating {side.venv}")
        t0 = time.monotonic()
        subprocess.run([python, "-m", "venv", str(side.venv)], check=True)
        pip = [str(side.python), "-m", "pip", "install", "-q"]
        done = subprocess.run(
            [*pip, "-e", str(pure), mypy_requirement(pure)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        if done.returncode != 0:
            raise SystemExit(f"{side.role}: pip install failed:\n{done.stderr[-3000:]}")
        (side.venv / ".compare-key").write_text(want)
        log(f"{side.role}: venv ready in {time.monotonic() - t0:.0f} s")


def build(side: Side) -> str | None:
    """The compiled copy of the side's tree (its own tools/compile.py): None when it
    is ready, else why it is not."""
    comp = side.trees["compiled"]
    fp = side.info["fingerprint"]
    if marker(comp / ".compare-fingerprint") == fp and marker(comp / ".compare-build") == "ok":
        return None
    shutil.rmtree(comp, ignore_errors=True)
    shutil.copytree(side.root, comp, ignore=shutil.ignore_patterns(".compare-*"))
    (comp / ".compare-fingerprint").write_text(fp)
    script = comp / "tools" / "compile.py"
    if not script.is_file():
        return f"{side.label} has no tools/compile.py"
    log(f"{side.role}: compiling {side.label} with mypyc (tools/compile.py) ...")
    t0 = time.monotonic()
    done = subprocess.run(
        [str(side.python), str(script)],
        cwd=comp,
        env=side_env(side, "compiled"),
        capture_output=True,
        text=True,
        check=False,
    )
    side.info["compile_seconds"] = round(time.monotonic() - t0, 1)
    if done.returncode != 0:
        tail = " / ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-3:])
        found = inspect_library(side, "compiled")
        if not found["extensions"] or found["loaded"] != found["extensions"]:
            return f"tools/compile.py failed for {side.label}: {tail}"
        # mypyc built every module, only the script's own check disagrees
        side.info["compile_note"] = (
            f"tools/compile.py exited {done.returncode} for {side.label} ({tail}), but its "
            f"{found['loaded']} extension modules load: measured as compiled"
        )
        log(f"{side.role}: {side.info['compile_note']}")
    else:
        log(f"{side.role}: {done.stdout.strip()} ({side.info['compile_seconds']:.0f} s)")
    (comp / ".compare-build").write_text("ok")
    return None


#: run in a side's environment: which meshgate it imports, and how many of the
#: extension modules beside its sources load as such (``meshgate.COMPILED`` is the
#: library's own word, checked too; this does not depend on it being right)
CHECK = """
import importlib, json, sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
import meshgate
src = Path(sys.argv[1])
names = []
for p in sorted((src / "meshgate").rglob("*")):
    suffix = next((s for s in EXTENSION_SUFFIXES if p.name.endswith(s)), None)
    if suffix and p.is_file():
        names.append(".".join(p.relative_to(src).parts)[: -len(suffix)])
loaded = [n for n in names if not str(importlib.import_module(n).__file__).endswith(".py")]
print(json.dumps({
    "flag": bool(getattr(meshgate, "COMPILED", False)),
    "file": meshgate.__file__,
    "python": sys.version.split()[0],
    "extensions": len(names),
    "loaded": len(loaded),
}))
"""


def inspect_library(side: Side, mode: str) -> dict[str, Any]:
    """What the side's environment imports in ``mode`` (see :data:`CHECK`)."""
    done = subprocess.run(
        [str(side.python), "-c", CHECK, str(side.trees[mode] / "src")],
        env=side_env(side, mode),
        capture_output=True,
        text=True,
        check=False,
        cwd=side.venv,
    )
    if done.returncode != 0:
        raise SystemExit(f"{side.role}: meshgate does not import ({mode}): {done.stderr}")
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def check_library(side: Side, mode: str) -> dict[str, Any]:
    """The side's library in ``mode``: from its own tree, compiled or not as ``mode``
    says (a wrong ``meshgate.COMPILED`` is recorded as a warning, not trusted)."""
    found = inspect_library(side, mode)
    if not found["file"].startswith(str(side.trees[mode])):
        raise SystemExit(f"{side.role} ({mode}) imports the wrong meshgate: {found['file']}")
    compiled = found["extensions"] > 0 and found["loaded"] == found["extensions"]
    if mode == "pure" and found["extensions"]:
        raise SystemExit(f"{side.role}: extension modules in the pure tree {side.trees[mode]}")
    if mode == "compiled" and not compiled:
        raise SystemExit(f"{side.role}: the compiled build does not load: {found}")
    if found["flag"] != compiled:
        found["warning"] = (
            f"meshgate.COMPILED is {found['flag']} although {found['loaded']} extension "
            "modules load"
            if compiled
            else "meshgate.COMPILED is True in a pure tree"
        )
    return found


# -- the benchmarks -------------------------------------------------------------------------------


def metric(
    bench: str, scenario: str, unit: str, value: float, control: bool = False
) -> dict[str, Any]:
    better = "lower" if unit in LOWER_IS_BETTER else "higher"
    return {
        "bench": bench,
        "scenario": scenario,
        "unit": unit,
        "better": better,
        "control": control,
        "value": value,
    }


def _median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(xs) if xs else None


def core_metrics(stdout: str) -> list[dict[str, Any]]:
    """bench_core.py's table: one rate per line, ``name   1,234,567 /s``."""
    out = []
    for line in stdout.splitlines():
        m = re.match(r"^(.*?\S)\s+([\d,]+(?:\.\d+)?) /s$", line.strip())
        if m:
            out.append(metric("core", " ".join(m[1].split()), "/s", float(m[2].replace(",", ""))))
    return out


def node_metrics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """bench_node.py's ``--json``: every row, per server column."""
    out = []
    for row in doc["rows"]:
        for server, cell in row["servers"].items():
            value = _median(cell["samples"])
            if value is not None:
                name = f"{NODE_COLUMNS.get(server, server)}: {row['scenario']}"
                out.append(metric("node", name, row["unit"], value, server == "nats"))
    return out


def relay_metrics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """bench_relay.py's ``--json``: per server and step, p50 and p99 latency and the
    node's CPU time per delivery; meshgate's memory per idle client."""
    out = []
    for st in doc["steps"]:
        server, n = st["server"], st["clients"]
        control = server != "meshgate"
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            value = _median(st[key]["samples"])
            if value is not None:
                out.append(metric("relay", f"{server}: {n} clients, {label}", "ms", value, control))
        pairs = zip(st["node_cpu"]["samples"], st["deliveries_per_s"]["samples"], strict=True)
        cpu = _median([1e6 * c / d if d else None for c, d in pairs])
        if cpu is not None:
            out.append(
                metric(
                    "relay", f"{server}: {n} clients, server CPU", "us CPU/delivery", cpu, control
                )
            )
    idle = doc.get("idle_client_kib")
    if idle is not None:
        out.append(metric("relay", "meshgate: memory per idle client", "KiB/client", idle))
    return out


def bench_command(bench: str, args: argparse.Namespace, out: Path) -> list[str]:
    """The script's arguments: one warm-up and one measured repeat per invocation."""
    nats = [] if args.nats else ["--no-nats"]
    if bench == "core":
        return ["--quick"] if args.quick else []
    if bench == "node":
        return ["--repeat", "1", "--json", str(out), *nats, *(["--quick"] if args.quick else [])]
    if args.quick:
        return ["--quick", "--json", str(out), *nats]
    steps = ["--steps", args.relay_steps, "--seconds", str(args.relay_seconds)]
    return ["--repeat", "1", "--json", str(out), *steps, *nats]


def run_bench(
    bench: str, side: Side, mode: str, scripts: Path, args: argparse.Namespace, rundir: Path
) -> dict[str, Any]:
    """One invocation of one benchmark on one side: its figures and the raw output."""
    out = rundir / f"{bench}-{side.role}.json"
    out.unlink(missing_ok=True)
    cmd = [str(side.python), str(scripts / SCRIPTS[bench][0]), *bench_command(bench, args, out)]
    record: dict[str, Any] = {
        "side": side.role,
        "scripts": str(scripts),
        "started": datetime.now().isoformat(timespec="seconds"),
        "loadavg_before": list(os.getloadavg()),
    }
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            cwd=rundir,
            env=side_env(side, mode),
            capture_output=True,
            text=True,
            timeout=600 if args.quick else 3600,
            check=False,
        )
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {exc.timeout} s"
    record["seconds"] = round(time.monotonic() - t0, 2)
    record["returncode"] = rc
    record["metrics"] = []
    if rc == 0:
        try:
            if bench == "core":
                record["raw"] = stdout
                record["metrics"] = core_metrics(stdout)
            else:
                raw = json.loads(out.read_text())
                record["raw"] = raw
                record["metrics"] = (node_metrics if bench == "node" else relay_metrics)(raw)
        except (OSError, ValueError, KeyError) as exc:
            record["returncode"] = rc = -2
            stderr += f"\nunreadable output: {exc!r}"
    if rc != 0 or not record["metrics"]:
        record["returncode"] = rc or -3
        record["stderr_tail"] = stderr[-3000:]
    return record


def choose_scripts(old: Side, new: Side, benches: Sequence[str], policy: str) -> dict[str, Any]:
    """Per benchmark, whose bench scripts measure both sides, and why."""
    chosen = {}
    for bench in benches:
        files = SCRIPTS[bench]

        def content(side: Side, f: str) -> bytes | None:
            p = side.root / "bench" / f
            return p.read_bytes() if p.is_file() else None

        same = all(content(old, f) == content(new, f) for f in files)
        if same:
            chosen[bench] = {"use": "new", "identical": True, "note": "identical in both trees"}
        elif policy == "own" or content(new, files[0]) is None:
            note = "differ between the trees; each side runs its own (--scripts own)"
            chosen[bench] = {"use": "own", "identical": False, "note": note}
        else:
            # the new scripts' imports against the old library (argparse comes after them)
            probe = subprocess.run(
                [str(old.python), str(new.root / "bench" / files[0]), "--help"],
                env=side_env(old, "pure"),
                capture_output=True,
                text=True,
                check=False,
                cwd=old.venv,
            )
            if probe.returncode == 0:
                note = "differ between the trees; the new tree's scripts measure both libraries"
                chosen[bench] = {"use": "new", "identical": False, "note": note}
            else:
                why = (probe.stderr.strip().splitlines() or ["?"])[-1]
                note = (
                    "differ between the trees, and the new tree's do not run against the old "
                    f"library ({why}); each side runs its own"
                )
                chosen[bench] = {"use": "own", "identical": False, "note": note}
    return chosen


# -- the table ------------------------------------------------------------------------------------


def summarise(runs: Sequence[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Per mode and scenario: both sides' samples, their medians, new/old, and whether
    new is more than ``threshold`` (a fraction) worse in the scenario's direction."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        if run.get("returncode") != 0:
            continue
        for m in run["metrics"]:
            key = (run["mode"], m["bench"], m["scenario"])
            g = groups.setdefault(
                key, {"unit": m["unit"], "better": m["better"], "control": m["control"]}
            )
            v = m["value"]
            if v is not None and not math.isnan(v):
                g.setdefault(run["side"], []).append(v)
    rows = []
    for (mode, bench, scenario), g in groups.items():
        old, new = g.get("old", []), g.get("new", [])
        mo, mn = _median(old), _median(new)
        ratio = mn / mo if mo and mn is not None else None
        worse = None
        if ratio is not None:
            worse = 1 - ratio if g["better"] == "higher" else ratio - 1
        rows.append(
            {
                "mode": mode,
                "bench": bench,
                "scenario": scenario,
                "unit": g["unit"],
                "better": g["better"],
                "control": g["control"],
                "old": {"median": mo, "spread": spread(old), "samples": old},
                "new": {"median": mn, "spread": spread(new), "samples": new},
                "ratio": ratio,
                "worse": worse,
                "slower": bool(worse is not None and worse > threshold and not g["control"]),
            }
        )
    return rows


def spread(values: Sequence[float]) -> float | None:
    """Half the range of the samples relative to their median (0.05: +-5 %)."""
    med = _median(values)
    if not med or len(values) < 2:
        return None
    return (max(values) - min(values)) / 2 / med


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(rows: Sequence[dict[str, Any]], threshold: float) -> str:
    """The markdown table of :func:`summarise`'s rows."""
    lines = [
        "| mode | bench | scenario | unit | better | old | new | new/old | change | spread old / new | flag |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        change = "-" if r["worse"] is None else f"{-100 * r['worse']:+.1f} %"
        sp = " / ".join(
            "-" if r[s]["spread"] is None else f"±{100 * r[s]['spread']:.0f} %"
            for s in ("old", "new")
        )
        noisy = max(r["old"]["spread"] or 0, r["new"]["spread"] or 0) > threshold
        if r["slower"]:
            flag = f"**> {100 * threshold:g} % slower**" + (" (noisy)" if noisy else "")
        elif r["control"]:
            flag = "control"
        elif r["ratio"] is None:
            flag = "only " + ("old" if r["old"]["median"] is not None else "new")
        else:
            flag = ""
        lines.append(
            f"| {r['mode']} | {r['bench']} | {r['scenario']} | {r['unit']} | {r['better']} "
            f"| {fmt(r['old']['median'])} | {fmt(r['new']['median'])} | {ratio} | {change} "
            f"| {sp} | {flag} |"
        )
    return "\n".join(lines)


def report(doc: dict[str, Any], threshold: float) -> str:
    """The whole printed report of a run's document: what was compared, the table and
    the verdict."""
    rows = summarise(doc.get("runs", []), threshold)
    sides = doc.get("sides", {})
    out = []
    if sides:
        old, new = sides["old"], sides["new"]
        out.append(
            f"old: {old['spec']} ({old['label']}), new: {new['spec']} ({new['label']}); "
            f"{doc.get('repeats', '?')} repeat(s) per scenario, old and new alternating "
            f"(ABAB...){', quick' if doc.get('quick') else ''}"
        )
    for bench, s in doc.get("scripts", {}).items():
        out.append(f"- bench scripts for {bench}: {s['note']}")
    for role, info in sides.items():
        notes = [info.get("compile_note")]
        notes += [info[m].get("warning") for m in MODES if isinstance(info.get(m), dict)]
        out += [f"- {role}: {n}" for n in notes if n]
    for mode, m in doc.get("modes", {}).items():
        if m.get("status") != "ok":
            out.append(f"- {mode} mode not measured: {m.get('reason', m.get('status'))}")
    failed = [r for r in doc.get("runs", []) if r.get("returncode") != 0]
    for r in failed:
        tail = (r.get("stderr_tail") or "").strip().splitlines()[-1:] or [""]
        out.append(
            f"- FAILED: {r['mode']} {r['bench']} repeat {r['repeat'] + 1} {r['side']}: "
            f"exit {r['returncode']} {tail[0]}"
        )
    machine = doc.get("machine")
    if machine:
        out.append(
            f"- machine: {machine.get('cpu_count')} cores, Python "
            f"{machine.get('python', '?')}, load {machine.get('loadavg_start')} -> "
            f"{machine.get('loadavg_end')}"
        )
        loads = [r["loadavg_before"][0] for r in doc.get("runs", []) if "loadavg_before" in r]
        cores = machine.get("cpu_count") or 1
        start = (machine.get("loadavg_start") or [0.0])[0]
        # the benchmarks load the machine themselves (a server and a load generator)
        if start > 0.5 * cores or (loads and max(loads) > cores + 0.5):
            out.append(
                f"- WARNING: the machine was busy (1-minute load {start:.1f} at the start, up "
                f"to {max(loads, default=start):.1f} during the run, on {cores} cores): "
                "repeat on a quiet machine"
            )
    if doc.get("quick"):
        out.append("- QUICK run: tiny counts, a smoke test of the tool; its figures mean nothing")
    out += [
        "",
        table(rows, threshold),
        "",
        "medians of the repeats; change: + is better (a higher rate, or a lower latency, "
        "CPU time or memory); spread: ± half the range of the repeats (noisy: more than the "
        "threshold on either side); control: the same nats-server binary on both sides "
        "(machine drift)",
    ]
    slow = [r for r in rows if r["slower"]]
    if slow:
        out.append(f"\n{len(slow)} scenario(s) more than {100 * threshold:g} % slower:")
        out += [f"- {r['mode']} {r['bench']}: {r['scenario']}" for r in slow]
    elif rows:
        out.append(f"\nno scenario more than {100 * threshold:g} % slower")
    return "\n".join(out)


# -- the run --------------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (the scripts' ratios without a reference)
    as None, so that the document is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu_model"] = model[1] if model else None
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["mem_total_mib"] = int(mem[1]) // 1024 if mem else None
    except OSError:
        pass
    nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if os.access(nats, os.X_OK):
        done = subprocess.run([nats, "--version"], capture_output=True, text=True, check=False)
        info["nats_server"] = done.stdout.strip()
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--old", default=DEFAULT_OLD, help=f"revision or path (default {DEFAULT_OLD})")
    ap.add_argument("--new", default="HEAD", help="revision or path (default HEAD)")
    ap.add_argument("--repo", type=Path, help="the repository of the revisions (default: this one)")
    ap.add_argument("--repeat", type=int, help="repeats per side (default 5, --quick 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny counts, 2 repeats")
    ap.add_argument("--modes", default=",".join(MODES), help="pure,compiled (default both)")
    ap.add_argument("--benches", default=",".join(BENCHES), help="core,node,relay (default all)")
    ap.add_argument("--nats", action="store_true", help="add nats-server as a control column")
    ap.add_argument(
        "--scripts",
        choices=("new", "own"),
        default="new",
        help="where the bench scripts differ: the new tree's for both sides (default, if "
        "they run against the old library) or each side its own",
    )
    ap.add_argument("--relay-steps", default="420,840", help="relay client counts (420,840)")
    ap.add_argument("--relay-seconds", type=float, default=3.0, help="relay measuring time (3)")
    ap.add_argument("--threshold", type=float, default=3.0, help="percent slower flagged (3)")
    ap.add_argument("--keep", action="store_true", help="keep trees, venvs and builds (--workdir)")
    ap.add_argument(
        "--workdir",
        type=Path,
        help="where the trees and venvs live (implies --keep; default: a temporary "
        "directory, or ~/.cache/meshgate-compare with --keep)",
    )
    ap.add_argument("--python", default=sys.executable, help="the Python the venvs are made from")
    ap.add_argument("--out", type=Path, help="the JSON file (default bench/results/compare-...)")
    ap.add_argument("--table", type=Path, metavar="JSON", help="print an earlier run's table")
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    args.modes = [m for m in args.modes.split(",") if m]
    args.benches = [b for b in args.benches.split(",") if b]
    for m in args.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (choose from {', '.join(MODES)})")
    for b in args.benches:
        if b not in BENCHES:
            ap.error(f"unknown benchmark {b!r} (choose from {', '.join(BENCHES)})")
    if args.workdir is not None:
        args.keep = True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threshold = args.threshold / 100
    if args.table:
        print(report(json.loads(args.table.read_text()), threshold))
        return 0
    started = time.monotonic()
    repo = args.repo or Path(git(HERE, "rev-parse", "--show-toplevel"))
    old, new = resolve("old", args.old, repo), resolve("new", args.new, repo)
    if args.keep:
        workdir = args.workdir or Path.home() / ".cache" / "meshgate-compare"
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="meshgate-compare-"))
    workdir = workdir.resolve()
    date = datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = "-quick" if args.quick else ""
    out = args.out or HERE / "results" / f"compare-{old.label}-{new.label}-{date}{suffix}.json"
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "compare-commits",
        "created": datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": args.repeat,
        "order": "per mode and benchmark, old then new, repeated (ABAB...)",
        "threshold_percent": args.threshold,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
    }
    runs: list[dict[str, Any]] = []
    try:
        for side in (old, new):
            prepare(side, repo, workdir, args.python)
        modes: dict[str, dict[str, Any]] = {}
        for mode in args.modes:
            reason = None
            if mode == "compiled":
                reasons = [r for r in (build(old), build(new)) if r]
                reason = "; ".join(reasons) or None
            if reason:
                log(f"compiled mode skipped: {reason}")
                modes[mode] = {"status": "skipped", "reason": reason}
                continue
            for side in (old, new):
                side.info[mode] = check_library(side, mode)
            modes[mode] = {"status": "ok"}
        doc["modes"] = modes
        doc["sides"] = {
            s.role: {"spec": s.spec, "sha": s.sha, "label": s.label, **s.info} for s in (old, new)
        }
        scripts = choose_scripts(old, new, args.benches, args.scripts)
        doc["scripts"] = scripts
        doc["setup_seconds"] = round(time.monotonic() - started, 1)
        log(f"setup done in {doc['setup_seconds']:.0f} s; measuring")
        rundir = workdir / "run"
        rundir.mkdir(exist_ok=True)
        for mode in (m for m in args.modes if modes[m]["status"] == "ok"):
            for bench in args.benches:
                rep = 0
                while rep < args.repeat:
                    for side in (old, new):
                        use = new if scripts[bench]["use"] == "new" else side
                        run = run_bench(bench, side, mode, use.root / "bench", args, rundir)
                        run.update(mode=mode, bench=bench, repeat=rep)
                        runs.append(run)
                        log(
                            f"[{mode}] {bench} {rep + 1}/{args.repeat} {side.role}: "
                            f"{run['seconds']:.1f} s, load {run['loadavg_before'][0]:.2f}"
                            + ("" if run["returncode"] == 0 else f", FAILED ({run['returncode']})")
                        )
                        if (
                            run["returncode"] != 0
                            and side is old
                            and use is new
                            and not scripts[bench]["identical"]
                        ):
                            scripts[bench] = {
                                "use": "own",
                                "identical": False,
                                "note": "differ between the trees, and the new tree's failed "
                                "against the old library; each side runs its own",
                            }
                            runs[:] = [r for r in runs if (r["mode"], r["bench"]) != (mode, bench)]
                            rep = -1
                            break
                    rep += 1
    finally:
        doc["runs"] = runs
        doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        doc["seconds"] = round(time.monotonic() - started, 1)
        doc["summary"] = summarise(runs, threshold)
        if runs:
            out.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(finite(doc), indent=1, allow_nan=False, default=str)
            out.write_text(text + "\n")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(doc, threshold))
    print(
        f"\nraw figures: {out}; {doc['seconds'] / 60:.1f} min in all "
        f"({doc['setup_seconds'] / 60:.1f} min setting up)"
        + (f"; trees and venvs kept in {workdir}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
