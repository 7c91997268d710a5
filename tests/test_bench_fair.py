"""bench/bench_fair.py: the generator's frames, and a smoke run (tiny sizes, no timing).

The timed run is not a test: nothing here asserts a rate or a latency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import _gen  # noqa: E402
import report  # noqa: E402


@pytest.mark.parametrize("name", ["meshgate", "nats", "null"])
def test_every_frame_of_a_scenario_has_one_length_and_the_stamp_at_its_payload(
    name: str,
) -> None:
    proto = _gen.PROTOS[name]()
    frames = [proto.msg(1, f"g.0000.{i:05d}", _gen.make_payload(48, i)) for i in range(3)]
    assert len({len(f) for f in frames}) == 1
    assert len({f.offset for f in frames}) == 1
    for i, f in enumerate(frames):
        stamp, origin = _gen.STAMP.unpack_from(f.data, f.offset)
        assert (stamp, origin) == (0.0, i)
    pub = proto.pub("g.0000.00001", _gen.make_payload(48, 1))
    patched = bytearray(pub.data)
    _gen.STAMP.pack_into(patched, pub.offset, 12.5, 1)
    assert _gen.STAMP.unpack_from(patched, pub.offset) == (12.5, 1)
    assert patched[: pub.offset] == pub.data[: pub.offset]
    assert patched[pub.offset + _gen.STAMP.size :] == pub.data[pub.offset + _gen.STAMP.size :]


def test_the_null_server_is_sent_the_bytes_a_nats_subscriber_receives() -> None:
    payload = _gen.make_payload(128)
    nats_msg = _gen.NatsProto().msg(1, "bench.sub1", payload)
    null_pub = _gen.NullProto().pub("bench.sub1", payload)
    assert null_pub.data == nats_msg.data
    assert nats_msg.data.startswith(b"MSG bench.sub1 1 128\r\n")


def test_verify_masks_only_the_stamp() -> None:
    want = _gen.MeshgateProto().msg(1, "bench.sub1", _gen.make_payload(32))
    got = bytearray(want.data)
    _gen.STAMP.pack_into(got, want.offset, 3.0, 9)
    _gen.verify(got, want, _gen.STAMP.size)
    got[-1] ^= 1
    with pytest.raises(AssertionError):
        _gen.verify(got, want, _gen.STAMP.size)
    with pytest.raises(AssertionError):
        _gen.verify(want.data[:-1], want, 0)


@pytest.mark.parametrize("name", ["meshgate", "nats"])
def test_a_responder_learns_a_rewritten_reply_subject(name: str) -> None:
    proto = _gen.PROTOS[name]()
    frame = proto.msg(1, "svc.echo", _gen.make_payload(16), reply="_GR_.A.a0.inbox.bench")
    assert proto.learn(frame.data[:-1]) is None
    assert proto.learn(frame.data + b"more") == ("_GR_.A.a0.inbox.bench", len(frame))


def test_a_smoke_run_delivers_every_message_and_renders_the_tables(tmp_path: Path) -> None:
    servers = "mg-nats,mg,null" + (",nats" if shutil.which("nats-server") else "")
    out = tmp_path / "fair.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run_all.py"),
            "--json",
            str(out),
            "--quick",
            "--only",
            "node,relay",
            "--servers",
            servers,
            "--fanout-msgs",
            "300",
            "--seconds",
            "0.1",
            "--relay-max",
            "42",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1
    assert doc["command"]
    assert "compiled" in doc
    assert doc["loadavg_start"]
    assert doc["loadavg_end"]
    measured = [s for s in doc["samples"] if not s["warmup"]]
    scenarios = {(s["scenario"], s["server"]) for s in measured}
    for server in servers.split(","):
        for scenario in ("node 1->1 128B", "node fan-out 100 128B", "node request/reply"):
            assert (scenario, server) in scenarios
    for s in measured:
        assert "error" not in s, s
        assert s["expected"] > 0
        assert s["received"] == s["expected"], s
        assert s["generators"], s
        for g in s["generators"]:
            assert g["cpu_s"] >= 0
            assert g["wall_s"] > 0
    assert any(s["scenario"].startswith("relay ") for s in measured)
    text = report.render([doc])
    assert "NATS port / nats-server" in text
    assert "Against the targets" in text
