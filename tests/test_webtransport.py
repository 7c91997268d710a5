"""WebTransport for browsers (issue 20): ``clients/js/meshgate.js`` in a real headless
Chromium plays the same game as a TCP client on one node with one replicant.

The test serves a page and the JS client over HTTP on 127.0.0.1 (a secure context), runs
``chromium --headless=new`` on it, and the page posts what it saw back to the same HTTP
server.  The node's certificate is a self-signed ECDSA one valid for 10 days, pinned
by the page with ``serverCertificateHashes`` (Chrome takes no more than 14 days).

Skips, saying why, without aioquic or without Chromium (found as ``$MESHGATE_CHROMIUM``,
``chromium`` or ``chromium-browser``; as root with apt-get, the test installs Debian's
``chromium`` package first).
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshgate
from meshgate import GatewayConfig, User, open_gateway
from meshgate.replicant import InMemoryReplicant, connect_replicant
from meshgate.spatial import Grid

pytest.importorskip(
    "aioquic", reason="webtransport:// needs aioquic (pip install 'meshgate[quic]')"
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT_JS = ROOT / "clients" / "js" / "meshgate.js"
GRID = Grid(10.0)
PLAYER = User(token="browser-player-token", name="player")
OWNER = User(token="owner-replicant-token", name="owner", replicant=True)
SESSION = "browser-pilot-session-key-0123456789"


def _chromium() -> str:
    """Chromium's path, installed if need be and possible; skips otherwise."""
    for name in (os.environ.get("MESHGATE_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"],
            ):
                subprocess.run(cmd, check=True, capture_output=True, timeout=900, env=env)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"Chromium is not installed and apt-get install chromium failed: {exc}")
        if path := shutil.which("chromium"):
            return path
    pytest.skip("the browser test needs Chromium (apt-get install chromium, or $MESHGATE_CHROMIUM)")


@pytest.fixture(scope="module")
def ecdsa_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, bytes]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1, valid 10 days: its cert and
    key files, and the SHA-256 of its DER (the page's ``serverCertificateHashes``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("wt-cert")
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return str(cert_file), str(key_file), digest


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>meshgate WebTransport test</title>
<pre id="out">running</pre>
<script type="module">
import { connect, encode } from "./meshgate.js";
const cfg = %(cfg)s;
cfg.hashes = cfg.hashes.map((h) => ({ algorithm: h.algorithm, value: new Uint8Array(h.value) }));
const out = document.getElementById("out");
const report = async (path, body) =>
  fetch(path, { method: "POST", body: JSON.stringify(body) });
const result = { states: [], ships: [], events: [], errors: [] };
try {
  // a wrong token is refused
  try {
    const bad = await connect(cfg.url, { token: "not-the-token", serverCertificateHashes: cfg.hashes });
    result.badTokenAccepted = true;
    await bad.close();
  } catch (e) { result.badTokenRefused = String(e.code ?? e); }
  const client = await connect(cfg.url, {
    token: cfg.token, session: cfg.session, serverCertificateHashes: cfg.hashes,
    onError: (e) => result.errors.push(String(e)),
  });
  result.features = client.server.features;
  let done;
  const finished = new Promise((r) => { done = r; });
  await client.subscribe("state.>", (m) => {
    const v = Number(new TextDecoder().decode(m.payload));
    result.states.push([v, m.unreliable, m.kseq]);
    if (v === cfg.lastState) done();
  });
  await client.subscribe("event.>", (m) => result.events.push(new TextDecoder().decode(m.payload)));
  let moved;
  const shipMoved = new Promise((r) => { moved = r; });
  await client.subscribe("cell.0.0.>", (m) => {
    const p = new TextDecoder().decode(m.payload);
    result.ships.push([p, m.reply]);
    if (p.endsWith("+++")) moved();
  });
  await client.flush();
  await report("/ready", {});
  result.inputSeqs = [];
  for (const d of ["+", "+", "+"]) result.inputSeqs.push(await client.sendInput("ship", d));
  await client.publish("event.browser", "hello from the browser");
  // the last state (a datagram) may be lost: the page gives up after 10 s, and says so
  const timedOut = await Promise.race([
    finished.then(() => false), new Promise((r) => setTimeout(() => r(true), 10000)),
  ]);
  if (timedOut) result.errors.push(`state ${cfg.lastState} never arrived`);
  // the inputs' effect comes back through the owner: wait for it too (bounded)
  await Promise.race([shipMoved, new Promise((r) => setTimeout(r, 10000))]);
  await client.flush();
  result.staleDropped = client.staleDropped;
  result.datagrams = client.datagrams;
  result.badDatagrams = client.badDatagrams;
  await client.close();
} catch (e) {
  result.errors.push(String(e && e.stack || e));
}
out.textContent = JSON.stringify(result);
await report("/result", result);
</script>
"""


class _Pages(http.server.SimpleHTTPRequestHandler):
    """GET serves the page directory; POST /ready and /result hand the body to the
    test (through ``server.posted``)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posted(self.path, body)  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Board:
    """What the page posted, for the trio side to wait on."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token
        self.posts: dict[str, bytes] = {}
        self.changed = trio.Event()

    def posted(self, path: str, body: bytes) -> None:
        def note() -> None:
            self.posts[path] = body
            self.changed.set()
            self.changed = trio.Event()

        trio.from_thread.run_sync(note, trio_token=self.token)

    async def wait(self, path: str) -> bytes:
        while path not in self.posts:
            await self.changed.wait()
        return self.posts[path]


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    shutil.copy(CLIENT_JS, tmp_path / "meshgate.js")
    return tmp_path


@pytest.fixture
def http_server(page_dir: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Pages, directory=str(page_dir))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _write_page(page_dir: Path, page: str, wt_url: str, digest: bytes, **more: Any) -> int:
    """The test page for the node's ``webtransport://`` listener ``wt_url`` (the page
    pins the certificate's ``digest``); returns the listener's UDP port."""
    port = int(wt_url.rsplit(":", 1)[1].split("/", 1)[0])
    cfg = {
        "url": f"https://127.0.0.1:{port}/meshgate",
        "token": PLAYER.token,
        "session": SESSION,
        "hashes": [{"algorithm": "sha-256", "value": list(digest)}],
        **more,
    }
    (page_dir / "index.html").write_text(page % {"cfg": json.dumps(cfg)})
    return port


def validate(state: bytes, data: bytes) -> bytes | None:
    """The owner accepts every input."""
    return None


async def test_a_browser_plays_the_same_game_as_a_tcp_client(
    ecdsa_cert: tuple[str, str, bytes],
    page_dir: Path,
    http_server: http.server.ThreadingHTTPServer,
    tmp_path: Path,
) -> None:
    chromium = _chromium()
    cert_file, key_file, digest = ecdsa_cert
    board = _Board(trio.lowlevel.current_trio_token())
    http_server.posted = board.posted  # type: ignore[attr-defined]
    cfg = GatewayConfig(
        listen=["tcp://127.0.0.1:0", "webtransport://127.0.0.1:0/meshgate"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        users=[PLAYER, OWNER],
        replicants=True,
        datagram_refresh=8,
    )
    owner = InMemoryReplicant("east", GRID, {"ship": (5, 5)}, validate=validate)
    with trio.fail_after(90):
        async with open_gateway(cfg) as gw:
            tcp_url, wt_url = gw.client_urls
            assert wt_url.startswith("webtransport://127.0.0.1:")
            assert wt_url.endswith("/meshgate")
            port = _write_page(page_dir, PAGE, wt_url, digest, lastState=20)
            async with (
                connect_replicant(tcp_url, "east", token=OWNER.token) as link,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(owner.run, link)
                await owner.wait_ready()
                async with (
                    meshgate.connect(tcp_url, token=PLAYER.token) as tcp,
                    tcp.subscribe("cell.0.0.>") as seen,
                    tcp.subscribe("event.>") as events,
                ):
                    await tcp.flush()
                    browser = await _open_browser(chromium, tmp_path, port, http_server)
                    try:
                        await board.wait("/ready")
                        # the TCP client's keyed state: datagrams to the browser
                        for i in range(1, 21):
                            await tcp.publish("state.e1", str(i).encode(), key="e1")
                        await tcp.flush()
                        result = json.loads(await board.wait("/result"))
                        # the browser's input moved the ship the TCP client watches
                        while True:
                            m = await seen.receive()
                            if m.reply is None and m.payload.endswith(b"+++"):
                                break
                        assert (await events.receive()).payload == b"hello from the browser"
                    finally:
                        browser.kill()
                        await browser.wait()
                nursery.cancel_scope.cancel()
            wt_stats = gw.statistics()
    assert result["errors"] == [], result["errors"]
    assert "badTokenAccepted" not in result
    assert result["badTokenRefused"]
    assert "game" in result["features"]
    assert result["inputSeqs"] == [1, 2, 3]
    values = [v for v, _, _ in result["states"]]
    assert values == sorted(set(values)), "state never goes back in time"
    assert values[-1] == 20
    unreliable = {v for v, u, _ in result["states"] if u}
    assert 20 in unreliable, "keyed state came as WebTransport datagrams"
    assert not ({8, 16} & unreliable), "every 8th update is a reliable refresh"
    assert result["datagrams"] >= len(unreliable)
    assert result["badDatagrams"] == 0
    assert any(p.endswith("+++") for p, _ in result["ships"]), "the browser saw its ship move"
    assert wt_stats.datagrams_out >= len(unreliable)
    (identity,) = {client for client, _ in owner.log["ship"]}
    assert identity.startswith("s-"), "the session key made the game identity"
    assert owner.states["ship"] == b"+++"


RECONNECT_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>meshgate WebTransport reconnect test</title>
<script type="module">
import { connect, NoRespondersError } from "./meshgate.js";
const cfg = %(cfg)s;
cfg.hashes = cfg.hashes.map((h) => ({ algorithm: h.algorithm, value: new Uint8Array(h.value) }));
const report = async (path, body) => fetch(path, { method: "POST", body: JSON.stringify(body) });
const dec = (b) => new TextDecoder().decode(b);
const result = { news: [], errors: [], told: [] };
const within = (promise, what) => Promise.race([
  promise, new Promise((_, no) => setTimeout(() => no(new Error(`${what}: not within 20 s`)), 20000)),
]);
try {
  let reconnected;
  const back = new Promise((r) => { reconnected = r; });
  const client = await connect(cfg.url, {
    token: cfg.token, session: cfg.session, serverCertificateHashes: cfg.hashes,
    reconnectWait: 100, onReconnect: (n) => reconnected(n),
    onDisconnect: () => report("/disconnected", {}),
    onError: (e) => result.told.push(String(e)), // what the node said as it went away
  });
  let gotNews;
  const news = new Promise((r) => { gotNews = r; });
  const states = [];
  const waiting = new Map(); // state value -> resolve
  const state = (v) => new Promise((r) => { waiting.set(v, r); });
  await client.subscribe("news.>", (m) => {
    if (m.key === undefined) { result.news.push(dec(m.payload)); gotNews(); return; }
    states.push(dec(m.payload));
    waiting.get(dec(m.payload))?.();
  });
  // keyed state numbered 1..3 on this connection (echoed to our own subscription)
  const third = state("3");
  const stateAfter = state("after");
  for (const v of ["1", "2", "3"]) await client.publish("news.state", v, { key: "s" });
  await within(third, "keyed state 3");
  result.reply = dec((await client.request("svc.echo", "ping")).payload);
  try {
    await client.request("svc.nobody", "anyone?", { timeout: 5000 });
    result.noResponders = "answered";
  } catch (e) { result.noResponders = e instanceof NoRespondersError ? "NoRespondersError" : String(e); }
  await client.flush();
  await report("/ready", {});
  result.statesBefore = [...states];
  // the node restarts; the client opens its session again
  result.attempts = await within(back, "reconnect");
  await client.flush();
  await report("/reconnected", {});
  await within(news, "news after the reconnect"); // the subscription was made again
  // the new connection numbers the key from 1 again: not taken for stale state
  await within(stateAfter, "keyed state after the reconnect");
  result.replyAfter = dec((await client.request("svc.echo", "again")).payload);
  result.reconnects = client.reconnects;
  await client.close();
} catch (e) {
  result.errors.push(String(e && e.stack || e));
}
await report("/result", result);
</script>
"""


async def _echo(client: meshgate.Client, ready: trio.Event) -> None:
    """Answer every request on ``svc.echo`` with ``echo:<payload>``."""
    async with client.subscribe("svc.echo") as sub:
        await client.flush()
        ready.set()
        async for m in sub:
            assert m.reply is not None
            await client.publish(m.reply, b"echo:" + m.payload)


async def test_a_browser_client_makes_requests_and_reconnects_to_a_restarted_node(
    ecdsa_cert: tuple[str, str, bytes],
    page_dir: Path,
    http_server: http.server.ThreadingHTTPServer,
    tmp_path: Path,
) -> None:
    """meshgate.js's request() (with the node's no-responders answer) and its automatic
    reconnect: the node goes away and comes back on the same port; the page's client
    opens its session again, its subscription is made again, and requests work."""
    chromium = _chromium()
    cert_file, key_file, digest = ecdsa_cert
    board = _Board(trio.lowlevel.current_trio_token())
    http_server.posted = board.posted  # type: ignore[attr-defined]

    def config(port: int) -> GatewayConfig:
        return GatewayConfig(
            listen=["tcp://127.0.0.1:0", f"webtransport://127.0.0.1:{port}/meshgate"],
            tls_cert_file=cert_file,
            tls_key_file=key_file,
            users=[PLAYER],
        )

    async def serve_echo(gw: meshgate.Gateway, nursery: trio.Nursery) -> meshgate.Client:
        client = await nursery.start(_connected, gw.client_urls[0])
        ready = trio.Event()
        nursery.start_soon(_echo, client, ready)
        await ready.wait()
        return client

    with trio.fail_after(90):
        async with open_gateway(config(0)) as gw, trio.open_nursery() as nursery:
            port = _write_page(page_dir, RECONNECT_PAGE, gw.client_urls[1], digest)
            await serve_echo(gw, nursery)
            browser = await _open_browser(chromium, tmp_path, port, http_server)
            try:
                await board.wait("/ready")
                nursery.cancel_scope.cancel()
            # the first node is gone (its UDP port too); the page's client retries
            except BaseException:
                browser.kill()
                raise
        try:
            await board.wait("/disconnected")
            async with open_gateway(config(port)) as gw2, trio.open_nursery() as nursery:
                tcp = await serve_echo(gw2, nursery)
                await board.wait("/reconnected")
                await tcp.publish("news.flash", b"the node is back")
                await tcp.publish("news.state", b"after", key="s")
                result = json.loads(await board.wait("/result"))
                nursery.cancel_scope.cancel()
        finally:
            browser.kill()
            await browser.wait()
    assert result["errors"] == [], result
    # the loss was reported (the node's "shutting down" frame, or the session's end if
    # the node was gone before the frame got through)
    assert result["told"], result
    assert result["reply"] == "echo:ping"
    assert result["noResponders"] == "NoRespondersError"
    assert result["attempts"] >= 1
    assert result["reconnects"] == 1
    assert result["news"] == ["the node is back"]
    assert result["statesBefore"][-1] == "3"  # (older ones may be superseded)
    assert result["replyAfter"] == "echo:again"


async def _connected(
    url: str, task_status: trio.TaskStatus[meshgate.Client] = trio.TASK_STATUS_IGNORED
) -> None:
    async with meshgate.connect(url, token=PLAYER.token) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def _open_browser(
    chromium: str, tmp_path: Path, port: int, http_server: http.server.ThreadingHTTPServer
) -> trio.Process:
    """Headless Chromium on the test page, QUIC forced on for the node's port."""
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-quic",
        f"--origin-to-force-quic-on=127.0.0.1:{port}",
        f"http://127.0.0.1:{http_server.server_address[1]}/index.html",
    ]
    return await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


# -- without a browser: aioquic's HTTP/3 client against the listener -----------------------


class _H3Client:
    """A minimal HTTP/3 + WebTransport client (aioquic) on one trio UDP socket."""

    def __init__(self, port: int) -> None:
        from aioquic.h3.connection import H3Connection
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection

        cfg = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            max_datagram_frame_size=65536,
            server_name="127.0.0.1",
        )
        cfg.verify_mode = __import__("ssl").CERT_NONE
        self.quic = QuicConnection(configuration=cfg)
        self.h3 = H3Connection(self.quic, enable_webtransport=True)
        self.addr = ("127.0.0.1", port)
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.events: list[Any] = []
        #: WebTransport streams this client opened (their data comes as QUIC events)
        self.raw_streams: set[int] = set()

    async def start(self) -> None:
        await self.sock.bind(("127.0.0.1", 0))
        self.quic.connect(self.addr, now=trio.current_time())
        await self.flush()

    async def flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=trio.current_time()):
            await self.sock.sendto(data, addr)

    async def until(self, done: Any) -> Any:
        """Drive the connection until ``done(event)`` holds for an HTTP/3 event."""
        while True:
            for e in self.events:
                if done(e):
                    self.events.remove(e)
                    return e
            timer = self.quic.get_timer()
            with trio.move_on_at(timer if timer is not None else trio.current_time() + 5):
                data, addr = await self.sock.recvfrom(65536)
                self.quic.receive_datagram(data, addr, now=trio.current_time())
            if timer is not None and trio.current_time() >= timer:
                self.quic.handle_timer(now=trio.current_time())
            while (qe := self.quic.next_event()) is not None:
                if getattr(qe, "stream_id", None) in self.raw_streams:
                    self.events.append(qe)  # aioquic's client does not parse its own
                    continue  # WebTransport streams' replies: the raw QUIC event
                self.events += self.h3.handle_event(qe)
            await self.flush()

    async def connect(self, path: str) -> tuple[int, int]:
        """A WebTransport CONNECT on ``path``: (stream id, status)."""
        from aioquic.h3.events import HeadersReceived

        sid = self.quic.get_next_available_stream_id()
        self.h3.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", f"127.0.0.1:{self.addr[1]}".encode()),
                (b":path", path.encode()),
            ],
        )
        await self.flush()
        e = await self.until(lambda e: isinstance(e, HeadersReceived) and e.stream_id == sid)
        return sid, int(dict(e.headers)[b":status"])


async def test_a_python_http3_client_is_refused_off_the_path_and_served_on_it(
    ecdsa_cert: tuple[str, str, bytes],
) -> None:
    """Without a browser: a request off the path gets 404, a second session 429, the
    client's datagrams are ignored and counted; the session on the path speaks the
    meshgate protocol on its first bidirectional stream and gets keyed state as
    datagrams (the session's quarter stream ID, then the keyed MSG)."""
    import msgpack
    from aioquic.h3.events import DatagramReceived
    from aioquic.quic.events import StreamDataReceived

    from meshgate.transports import get_transport

    cert_file, key_file, _ = ecdsa_cert
    cfg = GatewayConfig(
        listen=["tcp://127.0.0.1:0", "webtransport://127.0.0.1:0/mg"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        users=[PLAYER],
    )
    with trio.fail_after(20):
        async with open_gateway(cfg) as gw:
            tcp_url, wt_url = gw.client_urls
            port = int(wt_url.rsplit(":", 1)[1].split("/", 1)[0])
            counters = get_transport(wt_url).stats[wt_url]  # type: ignore[attr-defined]
            client = _H3Client(port)
            with client.sock:
                await client.start()
                assert (await client.connect("/elsewhere"))[1] == 404
                assert counters.requests_refused == 1
                session, status = await client.connect("/mg")
                assert status == 200
                assert (await client.connect("/mg"))[1] == 429
                assert counters.sessions_refused == 1
                client.h3.send_datagram(session, b"noise before anything")
                stream = client.h3.create_webtransport_stream(session, is_unidirectional=False)
                client.raw_streams.add(stream)
                hello = {"version": 1, "role": "client", "name": "h3", "token": PLAYER.token}
                out = msgpack.packb([0, hello]) + msgpack.packb([2, 1, "state.>", None])
                client.quic.send_stream_data(stream, out + msgpack.packb([5]))
                await client.flush()
                unpacker = msgpack.Unpacker()

                def frame(op: int) -> Any:
                    def done(e: Any) -> bool:
                        if isinstance(e, StreamDataReceived) and e.stream_id == stream:
                            unpacker.feed(e.data)
                        return any(f[0] == op for f in frames_seen(unpacker))

                    return done

                seen: list[list[Any]] = []

                def frames_seen(u: msgpack.Unpacker) -> list[list[Any]]:
                    seen.extend(u)
                    return seen

                await client.until(frame(6))  # PONG: the node accepted the session's client
                assert [f[0] for f in seen][:2] == [0, 6]
                async with meshgate.connect(tcp_url, token=PLAYER.token) as tcp:
                    await tcp.publish("state.e1", b"where e1 is", key="e1")
                    await tcp.flush()
                    e = await client.until(lambda e: isinstance(e, DatagramReceived))
                assert e.stream_id == session
                assert msgpack.unpackb(e.data) == [4, 1, "state.e1", None, b"where e1 is", 1, "e1"]
                assert gw.varz().quic[wt_url]["datagrams_ignored"] >= 1
                assert counters.sessions == 1


async def _play(client: _H3Client, path: str) -> tuple[int, int]:
    """A session on ``path`` whose protocol stream said HELLO and got its PONG:
    (session id, stream id)."""
    import msgpack
    from aioquic.quic.events import StreamDataReceived

    session, status = await client.connect(path)
    assert status == 200
    stream = client.h3.create_webtransport_stream(session, is_unidirectional=False)
    client.raw_streams.add(stream)
    hello = {"version": 1, "role": "client", "name": "h3", "token": PLAYER.token}
    client.quic.send_stream_data(stream, msgpack.packb([0, hello]) + msgpack.packb([5]))
    await client.flush()
    unpacker = msgpack.Unpacker()
    seen: list[list[Any]] = []

    def pong(e: Any) -> bool:
        if isinstance(e, StreamDataReceived) and e.stream_id == stream:
            unpacker.feed(e.data)
            seen.extend(unpacker)
        return any(f[0] == 6 for f in seen)

    await client.until(pong)
    return session, stream


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request_junk=st.binary(min_size=1, max_size=2000),
    protocol_junk=st.binary(min_size=1, max_size=2000),
    datagrams=st.lists(st.binary(max_size=1000), max_size=5),
)
async def test_garbage_on_a_session_costs_only_its_own_connection(
    ecdsa_cert: tuple[str, str, bytes],
    request_junk: bytes,
    protocol_junk: bytes,
    datagrams: list[bytes],
) -> None:
    """Garbage as an HTTP/3 request, on the protocol stream and as datagrams: the
    offender's connection may go, a bystander's session carries on."""
    cert_file, key_file, _ = ecdsa_cert
    cfg = GatewayConfig(
        listen=["tcp://127.0.0.1:0", "webtransport://127.0.0.1:0/mg"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        users=[PLAYER],
    )
    with trio.fail_after(30):
        async with open_gateway(cfg) as gw:
            tcp_url, wt_url = gw.client_urls
            port = int(wt_url.rsplit(":", 1)[1].split("/", 1)[0])
            bystander, offender = _H3Client(port), _H3Client(port)
            with bystander.sock, offender.sock:
                await bystander.start()
                await offender.start()
                await _play(bystander, "/mg")
                _, stream = await _play(offender, "/mg")
                junk_stream = offender.quic.get_next_available_stream_id()
                offender.quic.send_stream_data(junk_stream, request_junk)
                offender.quic.send_stream_data(stream, protocol_junk)
                for d in datagrams:
                    offender.quic.send_datagram_frame(d)
                await offender.flush()
                with trio.move_on_after(0.5):  # let the node read it (or close)
                    await offender.until(lambda e: False)
                # the bystander still plays: its stream answers, keyed state reaches it
                import msgpack
                from aioquic.h3.events import DatagramReceived
                from aioquic.quic.events import StreamDataReceived

                (mine,) = bystander.raw_streams
                sub = msgpack.packb([2, 7, "state.>", None]) + msgpack.packb([5])
                bystander.quic.send_stream_data(mine, sub)
                await bystander.flush()
                pong = msgpack.packb([6])
                await bystander.until(
                    lambda e: (
                        isinstance(e, StreamDataReceived) and e.stream_id == mine and pong in e.data
                    )
                )
                async with meshgate.connect(tcp_url, token=PLAYER.token) as tcp:
                    while True:  # a datagram may be lost: the next update follows
                        await tcp.publish("state.e1", b"still here", key="e1")
                        await tcp.flush()
                        with trio.move_on_after(0.2):
                            e = await bystander.until(lambda e: isinstance(e, DatagramReceived))
                            break
                assert e.data.endswith(b"\xa2e1")
