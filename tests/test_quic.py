"""QUIC client listeners (issue 20): the same protocol as TCP over one QUIC stream,
keyed state over unreliable datagrams, and bad input on the UDP port."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

import meshgate
from meshgate import GatewayConfig, open_gateway

pytest.importorskip("aioquic", reason="quic:// needs aioquic (pip install 'meshgate[quic]')")
trustme = pytest.importorskip("trustme", reason="the tests' certificates need trustme")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, ssl.SSLContext]:
    """The node's certificate and key files, and a client context trusting its CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d: Path = tmp_path_factory.mktemp("quic-certs")
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(cert_file), str(key_file), client


def quic_config(certs: tuple[str, str, ssl.SSLContext], **kw: object) -> GatewayConfig:
    cert_file, key_file, _ = certs
    return GatewayConfig(
        listen=["tcp://127.0.0.1:0", "quic://127.0.0.1:0"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        **kw,  # type: ignore[arg-type]
    )


async def test_quic_client_talks_to_tcp_client(certs: tuple[str, str, ssl.SSLContext]) -> None:
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs)) as gw:
            assert len(gw.client_urls) == 2
            tcp_url, quic_url = gw.client_urls
            assert gw.client_url == tcp_url
            assert quic_url.startswith("quic://127.0.0.1:")
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                sub_q = await q.add_subscription("to.quic")
                sub_t = await t.add_subscription("to.tcp")
                await q.flush()
                await t.flush()
                await t.publish("to.quic", b"hello quic")
                await q.publish("to.tcp", b"hello tcp")
                assert (await sub_q.receive()).payload == b"hello quic"
                assert (await sub_t.receive()).payload == b"hello tcp"


async def test_keyed_state_travels_as_datagrams_and_the_rest_reliably(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs, datagram_refresh=8)) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                state = await q.add_subscription("state.>")
                events = await q.add_subscription("event.>")
                await q.flush()
                for i in range(1, 21):
                    await t.publish("state.e1", str(i).encode(), key="e1")
                await t.publish("event.hit", b"boom")  # no key: the reliable stream
                await t.flush()
                got = []
                while not got or got[-1].payload != b"20":
                    got.append(await state.receive())
                hit = await events.receive()
            values = [int(m.payload) for m in got]
            assert values == sorted(set(values))  # never an older state after a newer one
            unreliable = {int(m.payload) for m in got if m.unreliable}
            assert 20 in unreliable
            # every 8th update of the key is a reliable refresh
            assert not ({8, 16} & unreliable)
            assert not hit.unreliable
            assert gw.statistics().datagrams_out >= 15
