from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate import ConfigError, GatewayConfig, Permissions, User
from meshgate.config import check_mapping
from meshgate.transports import MemoryTransport, register_transport, split_url

_CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_payload": 0}, "max_payload"),
        ({"max_payload": -5}, "max_payload"),
        ({"max_pending_bytes": True}, "max_pending_bytes"),
        ({"slow_consumer_policy": "explode"}, "slow_consumer_policy"),
        ({"name": "a.b"}, "name"),
        ({"cluster": ""}, "cluster"),
        ({"auth_timeout": 0}, "auth_timeout"),
        ({"listen": "tls://127.0.0.1:0"}, "tls"),
        ({"max_payload": 2048, "max_pending_bytes": 1024}, "max_pending_bytes"),
        ({"users": (User(token="t-12345678"), User(token="t-12345678"))}, "users"),
        ({"nats_listen": "tls://127.0.0.1:0"}, "nats_listen"),
        ({"backbone": "nats://h:7422", "cluster_listen": "127.0.0.1:0"}, "cluster_listen"),
        ({"backbone": "nats://h:7422", "gateway_listen": "127.0.0.1:0"}, "gateway_listen"),
        ({"backbone": "http://h:7422"}, "backbone"),
        ({"backbone": "tls://h:7422"}, "backbone_tls"),
    ],
)
def test_bad_values_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        GatewayConfig(**kw)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


def test_permissions_and_users_validate() -> None:
    with pytest.raises(ConfigError, match="allow"):
        Permissions(allow=("a.>.b",))
    with pytest.raises(ConfigError, match=r"users\.token"):
        User(token="short")
    u = User(token="long-enough-token", account="A")
    assert "long-enough-token" not in repr(u)


def test_from_mapping() -> None:
    cfg = GatewayConfig.from_mapping(
        {
            "name": "n1",
            "max_payload": 4096,
            "users": [{"token": "token-token-1", "account": "A", "publish": {"allow": ["game.>"]}}],
        }
    )
    assert cfg.users[0].publish.allow == ("game.>",)
    with pytest.raises(ConfigError, match="unknown configuration key"):
        GatewayConfig.from_mapping({"nmae": "typo"})
    with pytest.raises(ConfigError, match=r"users\[0\]"):
        GatewayConfig.from_mapping({"users": [{"tokn": "x"}]})


def test_backbone_credentials_come_from_the_urls() -> None:
    cfg = GatewayConfig(backbone=("nats://mesh:s3cret@hub:7422", "nats://hub2:7422"))
    assert (cfg.backbone_user, cfg.backbone_password, cfg.backbone_token) == (
        "mesh",
        "s3cret",
        None,
    )
    token = GatewayConfig(backbone="nats://tok-123@hub:7422")
    assert (token.backbone_user, token.backbone_token) == (None, "tok-123")
    assert GatewayConfig(backbone="hub:7422").backbone_token is None


def test_backbone_tls_table_in_toml(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    cfg = GatewayConfig.from_mapping(
        {"backbone": ["tls://hub:7422"], "backbone_tls": {"ca_file": str(pem)}}
    )
    assert cfg.backbone_tls is not None
    with pytest.raises(ConfigError, match="ca_file"):
        GatewayConfig.from_mapping({"backbone": ["tls://hub:7422"], "backbone_tls": {}})


# --- what `serve` would fail on is refused when the configuration is built ----------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"listen": "127.0.0.1:70000"}, "listen: port 70000 is out of range 0..65535"),
        ({"listen": "tls://[::1]:65536"}, "listen: port 65536 is out of range 0..65535"),
        ({"listen": "127.0.0.1"}, "listen: '127.0.0.1' has no port (write 127.0.0.1:PORT)"),
        ({"listen": "tcp://:4222"}, "listen: 'tcp://:4222' has no host"),
        ({"listen": "127.0.0.1:http"}, "listen: port 'http' is not a number"),
        ({"listen": "::1:4222"}, "listen: '::1:4222': write an IPv6 address in brackets"),
        ({"listen": ""}, "listen: must be a URL or host:port, not ''"),
        ({"cluster_listen": "localhost"}, "cluster_listen: 'localhost' has no port"),
        ({"gateway_listen": "127.0.0.1:-1"}, "gateway_listen: port '-1' is not a number"),
        ({"nats_listen": "127.0.0.1:99999"}, "nats_listen: port 99999 is out of range"),
        (
            {"nats_listen": ["127.0.0.1:0", "127.0.0.1:99999"]},
            "nats_listen[1]: port 99999 is out of range 0..65535",
        ),
        (
            {"monitor_listen": "http://127.0.0.1:8222"},
            "monitor_listen: 'http://127.0.0.1:8222': write host:port",
        ),
        (
            {"cluster_listen": "127.0.0.1:0", "routes": ("tcp://127.0.0.1:6222", "h:0")},
            "routes[1]: port 0 is out of range 1..65535 (a port this node dials)",
        ),
        ({"cluster_listen": "127.0.0.1:0", "routes": ("h",)}, "routes: 'h' has no port"),
        ({"cluster_listen": "127.0.0.1:0", "routes": ("memory://",)}, "routes: 'memory://'"),
        (
            {"gateway_listen": "127.0.0.1:0", "gateways": {"B": ["tcp://b:7222", "b:72220"]}},
            "gateways.B[1]: port 72220 is out of range 1..65535",
        ),
        ({"backbone": "nats://u:p@hub"}, "backbone: 'nats://u:p@hub' has no port"),
        (
            {"backbone": ("nats://hub:7422", "ws://hub:7422")},
            "backbone[1]: 'ws://hub:7422': use nats://, tcp:// or tls:// URLs",
        ),
        # two listeners on one address: the second cannot bind
        (
            {"listen": "127.0.0.1:4222", "monitor_listen": "127.0.0.1:4222"},
            "monitor_listen: '127.0.0.1:4222': the same address as listen",
        ),
        (
            {"listen": "127.0.0.1:4222", "nats_listen": "0.0.0.0:4222"},
            "nats_listen: '0.0.0.0:4222': the same address as listen",
        ),
        (
            {"listen": "memory://n", "cluster_listen": "memory://n"},
            "cluster_listen: 'memory://n': the same address as listen",
        ),
        # numbers say their unit
        ({"auth_timeout": 0}, "auth_timeout: must be a positive number of seconds, not 0"),
        ({"write_deadline": -1.5}, "write_deadline: must be a positive number of seconds"),
        ({"lame_duck_duration": -1}, "lame_duck_duration: must be a non-negative number of sec"),
        ({"max_payload": 0}, "max_payload: must be a positive number of bytes, not 0"),
        (
            {"max_payload": 2048, "max_pending_bytes": 1024},
            "max_pending_bytes: must be at least max_payload (2048 bytes), not 1024 bytes",
        ),
        ({"reuse_port": "yes"}, "reuse_port: must be true or false, not 'yes'"),
    ],
)
def test_urls_and_numbers_are_refused_with_the_field_named(
    kw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        GatewayConfig(**kw)  # type: ignore[arg-type]
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"listen": "tcp://0.0.0.0:65535", "nats_listen": ("[::1]:0", "ws://127.0.0.1:0/nats")},
        {"listen": "127.0.0.1:4222", "nats_listen": "[::]:4222"},  # v6 wildcard, v4 address
        {"listen": "memory://", "cluster_listen": "memory://", "monitor_listen": "localhost:0"},
        {"backbone": ("nats://tok@hub:7422", "hub2:7422"), "monitor_listen": "tcp://h:8222"},
        {"cluster_listen": "h:6222", "routes": "tcp://user@h:1/"},
    ],
)
def test_good_urls_pass(kw: dict[str, object]) -> None:
    GatewayConfig(**kw)  # type: ignore[arg-type]


@given(port=st.integers(min_value=0, max_value=200_000), dial=st.booleans())
def test_a_port_is_accepted_exactly_when_the_transport_can_use_it(port: int, dial: bool) -> None:
    url = f"tcp://127.0.0.1:{port}"
    low = 1 if dial else 0
    kw = {"cluster_listen": "127.0.0.1:0", "routes": (url,)} if dial else {"listen": url}
    if low <= port <= 65535:
        GatewayConfig(**kw)  # type: ignore[arg-type]
        assert split_url(url) == ("tcp", "127.0.0.1", port)
    else:
        with pytest.raises(ConfigError, match=rf"port {port} is out of range {low}\.\.65535"):
            GatewayConfig(**kw)  # type: ignore[arg-type]


_URL_PIECES = st.tuples(
    st.sampled_from(["", "tcp://", "tls://", "ws://"]),
    st.sampled_from(["", "127.0.0.1", "h", "[::1]", "::1", "[::1", "a@h"]),
    st.sampled_from(["", ":", ":0", ":1", ":65535", ":65536", ":x", ":-1", ":+1", ":٣"]),
    st.sampled_from(["", "/", "/path"]),
)


@given(pieces=_URL_PIECES)
def test_a_listener_url_accepted_here_is_one_the_transports_accept(
    pieces: tuple[str, str, str, str],
) -> None:
    url = "".join(pieces)
    tls = _CTX if url.startswith("tls") else None
    refused: ConfigError | None = None
    try:
        GatewayConfig(listen=url, tls=tls)
    except ConfigError as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "listen"
        return
    _, host, port = split_url(url)  # raises if the shell could not listen there
    assert 0 <= port <= 65535
    assert host


def test_a_scheme_needs_a_registered_transport_to_be_served() -> None:
    # a node simulated without transports names its endpoints as it likes ...
    assert GatewayConfig(listen="sim://a0").listen == "sim://a0"
    # ... but serve (and --check) need a transport for each
    data = {
        "listen": "carrier-pigeon://loft",
        "nats_listen": ["127.0.0.1:0", "sctp://h:1"],
        "cluster_listen": "127.0.0.1:0",
        "routes": ["pigeon://loft"],
        "gateway_listen": "127.0.0.1:0",
        "gateways": {"B": "sctp://b:1"},
    }
    errors = check_mapping(data)
    assert [(e.field, e.problem.partition(": ")[2][:29]) for e in errors] == [
        ("listen", "no transport for carrier-pige"),
        ("nats_listen[1]", "no transport for sctp:// (tcp"),
        ("routes", "no transport for pigeon:// (t"),
        ("gateways.B", "no transport for sctp:// (tcp"),
    ]
    register_transport("pigeon", MemoryTransport())
    assert [e.field for e in check_mapping(data)] == ["listen", "nats_listen[1]", "gateways.B"]


def test_listeners_are_named_as_errors_name_them() -> None:
    cfg = GatewayConfig(
        listen="127.0.0.1:0",
        gateway_listen="127.0.0.1:0",
        nats_listen=("127.0.0.1:0", "ws://127.0.0.1:0"),
        monitor_listen="127.0.0.1:0",
    )
    assert [field for field, _ in cfg.listeners] == [
        "listen",
        "gateway_listen",
        "nats_listen[0]",
        "nats_listen[1]",
        "monitor_listen",
    ]
    assert GatewayConfig(listen=None, nats_listen="127.0.0.1:0").listeners == (
        ("nats_listen", "127.0.0.1:0"),
    )


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (
            # a key appended after the last user belongs to that user
            {"users": [{"token": "token-token-1"}, {"token": "token-token-2", "replicnt": 1}]},
            "users[1]",
            "unknown key 'replicnt' "
            "(known: account, client_bandwidth, max_priority, name, publish, replicant, subscribe, token)",
        ),
        (
            {"users": [{"token": "token-token-1", "max_payload": 5}]},
            "users[0]",
            "unknown key 'max_payload' (known: account, client_bandwidth, max_priority, name, publish, "
            "replicant, subscribe, token); 'max_payload' is a top-level setting, but TOML puts "
            "every key after "
            "[[users]] into that table: move it above the first table",
        ),
        (
            {"users": [{"token": "token-token-1", "subscribe": {"alow": ["a"]}}]},
            "users[0].subscribe",
            "unknown key 'alow' (known: allow, allow_responses, deny)",
        ),
        (
            {"users": [{"token": "token-token-1", "publish": {"allow": ["a.>.b"]}}]},
            "users[0].publish.allow",
            "'a.>.b' is not a valid subject pattern",
        ),
        (
            {"users": [{"token": "token-token-1", "account": "a.b"}]},
            "users[0].account",
            "must be a single non-empty token, not 'a.b'",
        ),
        ({"users": [{"name": "x"}]}, "users[0]", "needs a token"),
        ({"users": {"token": "token-token-1"}}, "users", "must be an array of tables"),
        (
            {"users": [{"token": "token-token-1", "replicant": "yes"}]},
            "users[0].replicant",
            "must be true or false, not 'yes'",
        ),
        (
            {"listen": "tls://127.0.0.1:0", "tls": {"cert_file": "c", "key": "k"}},
            "tls",
            "unknown key 'key' (known: ca_file, cert_file, key_file)",
        ),
        (
            {"backbone": "tls://hub:7422", "backbone_tls": {"ca_file": "c", "ca": "c"}},
            "backbone_tls",
            "unknown key 'ca' (known: ca_file, cert_file, key_file)",
        ),
        (
            {"gateway_listen": "127.0.0.1:0", "gateways": {"B": "b:7222", "reject_unknown": 1}},
            "gateways.reject_unknown",
            "must be a URL or a list of URLs, not 1; 'reject_unknown' is a top-level setting",
        ),
        (
            {"gateway_listen": "127.0.0.1:0", "gateways": {"B": "b:7222", "interest_mode": "x"}},
            "gateways.interest_mode",
            "'x' has no port (write x:PORT); 'interest_mode' is a top-level setting",
        ),
        (
            {"gateway_secrets": {"B": "0123456789abcdef", "trusted_network": True}},
            "gateway_secrets.trusted_network",
            "must be a string of at least 16 characters; 'trusted_network' is a top-level",
        ),
    ],
)
def test_tables_name_the_table_and_index(data: dict[str, object], field: str, problem: str) -> None:
    errors = check_mapping(data)
    assert [(e.field, e.problem[: len(problem)]) for e in errors] == [(field, problem)]
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_mapping(data)
    assert (info.value.field, info.value.problem) == (errors[0].field, errors[0].problem)


def test_check_mapping_reports_every_user() -> None:
    errors = check_mapping(
        {"users": [{"token": "token-token-1", "x": 1}, {"token": "token-token-2"}, {"y": 2}]}
    )
    assert [e.field for e in errors] == ["users[0]", "users[2]"]
