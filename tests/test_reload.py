"""SIGHUP and Gateway.reconfigure: users, permissions and limits change while running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

import meshgate
from meshgate import Permissions, User

ALICE = User(token="alice-token-1", account="game")
BOB = User(token="bob-token-22", account="game")


def config(*users: User, **kw: object) -> meshgate.GatewayConfig:
    fields: dict[str, object] = {"listen": "127.0.0.1:0", "users": users, **kw}
    return meshgate.GatewayConfig(**fields)  # type: ignore[arg-type]


async def test_reconfigure_revokes_narrows_and_reports_what_needs_a_restart() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(ALICE, BOB)) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, token=ALICE.token) as alice,
                meshgate.connect(gw.client_url, token=BOB.token) as bob,
                bob.subscribe("secret.>") as secrets,
                bob.subscribe("public.>") as public,
            ):
                await bob.flush()
                narrowed = attrs.evolve(BOB, subscribe=Permissions(allow=("public.>",)))
                restart = gw.reconfigure(config(narrowed, name="renamed", max_connections=5))
                assert restart == ["name"]
                assert gw.config.max_connections == 5
                assert gw.config.name != "renamed"
                with pytest.raises(meshgate.ConnectionClosedError) as info:
                    await alice.flush()
                assert info.value.error is not None
                assert info.value.error.code == meshgate.ErrorCode.AUTH_FAILED
                with pytest.raises(meshgate.PermissionDeniedError) as narrowed:
                    await bob.flush()
                assert narrowed.value.sid == secrets.sid  # names the subscription it ended
                assert [e.code for e in bob.errors] == [meshgate.ErrorCode.PERMISSION_DENIED]
                async with meshgate.connect(gw.client_url, token=BOB.token) as pub:
                    await pub.publish("public.x", b"ok")
                    await pub.publish("secret.x", b"no longer yours")
                    await pub.flush()
                assert (await public.receive()).payload == b"ok"
                with pytest.raises(meshgate.PermissionDeniedError):
                    secrets.receive_nowait()  # over: the node ended it
                with pytest.raises(meshgate.ConnectionClosedError):
                    async with meshgate.connect(gw.client_url, token=ALICE.token):
                        pass


def toml(path: Path, tokens: list[str], name: str) -> None:
    users = "".join(f'[[users]]\ntoken = "{t}"\naccount = "game"\n' for t in tokens)
    path.write_text(f'name = "{name}"\nlisten = "127.0.0.1:0"\n{users}')


async def test_sighup_reloads_users_and_keeps_serving(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    toml(cfg, [ALICE.token, BOB.token], "n1")
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            buf = b""
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
            url = json.loads(buf.split(b"\n")[0])["client_url"]
            async with (
                meshgate.connect(url, token=ALICE.token) as alice,
                meshgate.connect(url, token=BOB.token) as bob,
            ):
                await alice.flush()
                toml(cfg, [BOB.token], "n2")
                proc.send_signal(signal.SIGHUP)
                with pytest.raises(meshgate.ConnectionClosedError):
                    while True:  # round trips until the revocation arrives
                        await alice.flush()
                await bob.flush()  # still served
            assert proc.returncode is None
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
            assert proc.returncode == 0
            assert proc.stderr is not None
            err = b""
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
            assert b"need a restart and were not applied: name" in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
