"""Mutual TLS on route and gateway ports; bad TLS configuration is refused up front."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Encoder, Hello

from .helpers import collect

CA = trustme.CA()
NODE_CERT = CA.issue_cert("127.0.0.1")


def server_ctx(ca: trustme.CA = CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    NODE_CERT.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ctx(*, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    CA.configure_trust(ctx)
    if with_cert:
        NODE_CERT.configure_cert(ctx)
    return ctx


def route_node(name: str, seeds: tuple[str, ...] = ()) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(
        name=name,
        cluster="A",
        listen="127.0.0.1:0",
        cluster_listen="tls://127.0.0.1:0",
        routes=seeds,
        cluster_tls=server_ctx(),
        cluster_tls_dial=client_ctx(),
        reconnect_wait=0.05,
    )


async def test_routes_over_mutual_tls_and_strangers_are_refused() -> None:
    with trio.fail_after(30):
        async with meshgate.open_gateway(route_node("a0")) as a0:
            assert a0.cluster_url is not None
            assert a0.cluster_url.startswith("tls://")
            async with meshgate.open_gateway(route_node("a1", (a0.cluster_url,))) as a1:
                await a0.wait_routes(1)
                await a1.wait_routes(1)
                async with (
                    meshgate.connect(a1.client_url) as sub,  # type: ignore[arg-type]
                    sub.subscribe("x") as s,
                    meshgate.connect(a0.client_url) as pub,  # type: ignore[arg-type]
                ):
                    await sub.flush()
                    await a1.flush_routes()
                    await pub.publish("x", b"over tls")
                    assert [m.payload for m in await collect(s, 1)] == [b"over tls"]
            # a dialer without a client certificate cannot even say HELLO
            host, port = a0.cluster_url.removeprefix("tls://").rsplit(":", 1)
            stream = await trio.open_ssl_over_tcp_stream(
                host, int(port), ssl_context=client_ctx(with_cert=False)
            )
            hello = Hello(version=PROTOCOL_VERSION, role="route", name="evil", cluster="A")
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(Encoder().encode(hello))
                while await stream.receive_some(1024):
                    pass
                raise trio.BrokenResourceError("closed")  # a clean close is a refusal too
            await trio.aclose_forcefully(stream)
            # plain TCP on the TLS port gets nowhere
            tcp = await trio.open_tcp_stream(host, int(port))
            await tcp.send_all(Encoder().encode(hello))
            with trio.move_on_after(2):
                data = await tcp.receive_some(1024)
                assert b"route" not in data
            await tcp.aclose()
            assert a0.statistics().routes == 0


async def test_gateways_over_mutual_tls() -> None:
    def node(name: str, cluster: str, gateways: dict[str, list[str]]) -> meshgate.GatewayConfig:
        return meshgate.GatewayConfig(
            name=name,
            cluster=cluster,
            listen="127.0.0.1:0",
            gateway_listen="tls://127.0.0.1:0",
            gateways=gateways,
            gateway_tls=server_ctx(),
            gateway_tls_dial=client_ctx(),
            reconnect_wait=0.05,
        )

    with trio.fail_after(30):
        async with meshgate.open_gateway(node("a0", "A", {})) as a0:
            assert a0.gateway_url is not None
            async with meshgate.open_gateway(node("b0", "B", {"A": [a0.gateway_url]})) as b0:
                await a0.wait_gateways(1, 1)
                await b0.wait_gateways(1, 1)
                async with (
                    meshgate.connect(a0.client_url) as sub,  # type: ignore[arg-type]
                    sub.subscribe("x") as s,
                    meshgate.connect(b0.client_url) as pub,  # type: ignore[arg-type]
                ):
                    await sub.flush()
                    await a0.flush_gateways()
                    await pub.publish("x", b"across clusters, over tls")
                    assert len(await collect(s, 1)) == 1


@pytest.mark.parametrize("kind", ["cluster", "gateway"])
def test_tls_listener_without_a_context_or_client_verification_is_refused(kind: str) -> None:
    with pytest.raises(meshgate.ConfigError) as info:
        meshgate.GatewayConfig(**{f"{kind}_listen": "tls://127.0.0.1:0"})  # type: ignore[arg-type]
    assert info.value.field == f"{kind}_tls"
    lax = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    NODE_CERT.configure_cert(lax)
    with pytest.raises(meshgate.ConfigError) as info:
        meshgate.GatewayConfig(  # type: ignore[arg-type]
            **{f"{kind}_listen": "tls://127.0.0.1:0", f"{kind}_tls": lax}
        )
    assert "mutual TLS" in str(info.value)
    with pytest.raises(meshgate.ConfigError) as info:
        meshgate.GatewayConfig(  # type: ignore[arg-type]
            **{f"{kind}_listen": "tls://127.0.0.1:0", f"{kind}_tls": server_ctx()}
        )
    assert f"{kind}_tls_dial" in str(info.value)


def test_serve_check_names_the_tls_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    pem = tmp_path / "node.pem"
    NODE_CERT.private_key_and_cert_chain_pem.write_to_path(str(pem))
    CA.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    good = tmp_path / "good.toml"
    good.write_text(
        'cluster_listen = "tls://127.0.0.1:0"\n'
        f'[cluster_tls]\ncert_file = "{pem}"\nkey_file = "{pem}"\nca_file = "{tmp_path / "ca.pem"}"\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_listen = "tls://127.0.0.1:0"\n')
    nomutual = tmp_path / "nomutual.toml"
    nomutual.write_text(
        f'cluster_listen = "tls://127.0.0.1:0"\n[cluster_tls]\ncert_file = "{pem}"\nkey_file = "{pem}"\n'
    )

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshgate", "serve", "--check", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert check(good).returncode == 0, check(good).stderr
    for path, field in [(bad, "gateway_tls"), (nomutual, "cluster_tls.ca_file")]:
        proc = check(path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f": {field}: " in lines[0]
