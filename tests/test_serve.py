"""`meshgate serve`: --check reports every error with field and line; SIGTERM drains."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme

import meshgate
from meshgate import ErrorCode

ROOT = Path(__file__).parent.parent


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "serve", "--check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_example_config_is_valid() -> None:
    proc = check(ROOT / "examples" / "node.toml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_check_reports_every_error_with_field_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "a.b"\n'  # line 1: not one token
        "max_payload = -1\n"  # line 2
        'slow_consumer_policy = "explode"\n'  # line 3
        "nmae = 3\n"  # line 4: unknown key
        "[[users]]\n"  # line 5
        'token = "short"\n'
    )
    proc = check(bad)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 5, lines
    joined = "\n".join(lines)
    assert f"{bad}:1: name:" in joined
    assert f"{bad}:2: max_payload: must be a positive number" in joined
    assert f"{bad}:3: slow_consumer_policy:" in joined
    assert f"{bad}:4: nmae: unknown configuration key" in joined
    assert f"{bad}:5: users.token:" in joined
    assert "short" not in joined  # a secret is never echoed


def test_check_reports_toml_syntax_and_cross_field_errors(tmp_path: Path) -> None:
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("name = \n")
    proc = check(syntax)
    assert proc.returncode == 2
    assert "TOML syntax" in proc.stderr
    cross = tmp_path / "cross.toml"
    cross.write_text('routes = ["tcp://127.0.0.1:1"]\n')
    proc = check(cross)
    assert proc.returncode == 2
    assert f"{cross}:1: routes: needs cluster_listen" in proc.stderr


def test_tls_files_in_toml(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cfg = tmp_path / "tls.toml"
    cfg.write_text(
        'listen = "tls://127.0.0.1:0"\n'
        f'[tls]\ncert_file = "{tmp_path / "server.pem"}"\nkey_file = "{tmp_path / "server.pem"}"\n'
    )
    assert check(cfg).returncode == 0
    missing = tmp_path / "missing.toml"
    missing.write_text(
        'listen = "tls://127.0.0.1:0"\n[tls]\ncert_file = "/nonexistent.pem"\nkey_file = "/nonexistent.pem"\n'
    )
    proc = check(missing)
    assert proc.returncode == 2
    assert f"{missing}:2: tls.cert_file: cannot load" in proc.stderr


async def test_sigterm_drains_and_exits(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('name = "d1"\nlisten = "127.0.0.1:0"\n')
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(cfg)], stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            buf = b""
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
            ready = json.loads(buf.split(b"\n")[0])
            assert ready["core"] == meshgate.CORE  # the ready line says which core runs
            # without reconnecting, to see the node's goodbye
            async with meshgate.connect(ready["client_url"], reconnect=False) as client:
                await client.flush()
                proc.send_signal(signal.SIGTERM)
                start = trio.current_time()
                with pytest.raises(meshgate.ConnectionClosedError) as info:
                    while True:  # round trips until the node says goodbye
                        await client.flush()
                assert info.value.error is not None
                assert info.value.error.code == ErrorCode.SHUTTING_DOWN
                assert await proc.wait() == 0
                assert trio.current_time() - start < 10  # bounded drain
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def serve_once(path: Path) -> subprocess.CompletedProcess[str]:
    """``meshgate serve`` with a configuration it must refuse (it never gets to run)."""
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "serve", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('listen = "127.0.0.1:70000"\n', "1: listen: port 70000 is out of range 0..65535"),
        (
            'name = "n1"\nmonitor_listen = "127.0.0.1"\n',
            "2: monitor_listen: '127.0.0.1' has no port (write 127.0.0.1:PORT)",
        ),
        (
            'nats_listen = ["127.0.0.1:0", "tcp://127.0.0.1:65536"]\n',
            "1: nats_listen[1]: port 65536 is out of range 0..65535",
        ),
        (
            'cluster_listen = "127.0.0.1:0"\nroutes = ["tcp://127.0.0.1:0"]\n',
            "2: routes: port 0 is out of range 1..65535 (a port this node dials)",
        ),
        (
            # a key appended after the last user belongs to that user
            '[[users]]\ntoken = "token-token-1"\n\n[[users]]\ntoken = "token-token-2"\n'
            "max_payload = 4096\n",
            "4: users[1]: unknown key 'max_payload' (known: account, client_bandwidth, max_priority, "
            "name, publish, replicant, subscribe, token); 'max_payload' is a top-level setting, but TOML "
            "puts every key after [[users]] into that table: move it above the first table",
        ),
        (
            '[[users]]\ntoken = "token-token-1"\n[users.publish]\nalow = ["game.>"]\n',
            "1: users[0].publish: unknown key 'alow' (known: allow, allow_responses, deny)",
        ),
        ("auth_timeout = 0\n", "1: auth_timeout: must be a positive number of seconds, not 0"),
    ],
)
def test_check_refuses_what_serve_would_fail_on_in_one_line(
    tmp_path: Path, text: str, error: str
) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(text)
    proc = check(cfg)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{cfg}:{error}"]


def test_serve_refuses_what_check_refuses_before_listening(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('name = "n1"\nlisten = "127.0.0.1:70000"\n')
    proc = serve_once(cfg)  # it used to end in a traceback from the transport
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"meshgate serve: {cfg}:2: listen: port 70000 is out of range 0..65535"
    ]
    assert proc.stdout == ""


def test_serve_with_tls_files_it_cannot_load_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "tls.toml"
    cfg.write_text(
        'listen = "tls://127.0.0.1:0"\n[tls]\ncert_file = "/nonexistent.pem"\n'
        'key_file = "/nonexistent.pem"\n'
    )
    proc = serve_once(cfg)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"meshgate serve: {cfg}:2: tls.cert_file: cannot load"), line


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            'listen = "127.0.0.1:0"\nmonitor_listen = "127.0.0.1:{port}"\n',
            "monitor_listen 127.0.0.1:{port}: address in use",
        ),
        (
            'nats_listen = ["127.0.0.1:0", "tcp://127.0.0.1:{port}"]\n',
            "nats_listen[1] tcp://127.0.0.1:{port}: address in use",
        ),
        (  # shared with SO_REUSEPORT, but the holder does not share it
            'reuse_port = true\nlisten = "127.0.0.1:{port}"\n',
            "listen 127.0.0.1:{port}: address in use",
        ),
    ],
)
async def test_serve_names_the_listener_whose_address_is_in_use(
    tmp_path: Path, text: str, error: str
) -> None:
    held = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = held.socket.getsockname()[1]
    cfg = tmp_path / "node.toml"
    cfg.write_text(text.format(port=port))
    with trio.fail_after(30):
        async with held:
            proc = await trio.run_process(
                [sys.executable, "-m", "meshgate", "serve", "-c", str(cfg)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert proc.returncode == 1
    assert proc.stdout == b""  # never ready
    assert proc.stderr.decode().splitlines() == [f"meshgate serve: {error.format(port=port)}"]
