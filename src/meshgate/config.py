"""Configuration classes: validated attrs value objects.

A bad value raises :class:`ConfigError` (a :class:`ValueError`) naming the field.
Secrets (tokens) never appear in ``repr``.
"""

from __future__ import annotations

__all__ = [
    "SLOW_CONSUMER_POLICIES",
    "check_mapping",
    "tls_context_from_files",
    "ConfigError",
    "GatewayConfig",
    "Permissions",
    "User",
]

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import MeshgateError
from .subjects import is_valid_pattern, is_valid_subject

#: Allowed values of :attr:`GatewayConfig.slow_consumer_policy`.
SLOW_CONSUMER_POLICIES = ("disconnect", "drop-oldest", "drop-new", "coalesce")


class ConfigError(MeshgateError, ValueError):
    """A configuration value is invalid; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _user_tuple(value: Iterable[User]) -> tuple[User, ...]:
    return tuple(value)


def _positive(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(attribute.name, f"must be a positive number, not {value!r}")


def _non_negative_number(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(attribute.name, f"must be a non-negative number, not {value!r}")


def _flush_window(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _non_negative_number(inst, attribute, value)
    assert isinstance(value, int | float)
    if value > 1.0:
        raise ConfigError(attribute.name, f"must be at most 1 second, not {value!r}")


def _non_negative_int(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(attribute.name, f"must be a non-negative integer, not {value!r}")


def _name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not is_valid_subject(value) or "." in value:
        raise ConfigError(attribute.name, f"must be a single non-empty token, not {value!r}")


def _patterns(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(attribute.name, "must be a tuple of patterns")
    for p in value:
        if not is_valid_pattern(p):
            raise ConfigError(attribute.name, f"{p!r} is not a valid subject pattern")


def _url_or_none(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(attribute.name, f"must be a URL or host:port, not {value!r}")


@attrs.frozen
class Permissions:
    """Allow/deny pattern lists; a subject is permitted if it matches an allow
    pattern and no deny pattern.  The default allows everything.

    For publishing, the subject checked is the one finally delivered (a reply routed
    back through ``_GR_.<cluster>.<node>.`` is checked unwrapped), and a message's
    reply subject must be permitted too (a client's own ``_INBOX.`` replies always
    are).  ``allow_responses`` lets a user answer requests (publish to ``_INBOX.``
    subjects) that its allow list does not name; deny patterns still apply."""

    allow: tuple[str, ...] = attrs.field(default=(">",), converter=_str_tuple, validator=_patterns)
    deny: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_patterns)
    allow_responses: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class User:
    """A user authenticating with ``token``, bound to ``account``."""

    token: str = attrs.field(repr=False)
    account: str = attrs.field(default="$G", validator=_name)
    name: str = "user"
    publish: Permissions = attrs.field(factory=Permissions)
    subscribe: Permissions = attrs.field(factory=Permissions)
    #: a replicant credential: may connect with role ``replicant`` (claim, release,
    #: receive inputs, confirm and correct); ordinary users may not
    replicant: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @token.validator
    def _check_token(self, attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or len(value) < 8:
            raise ConfigError("users.token", "must be a string of at least 8 characters")


def _users(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(u, User) for u in value):
        raise ConfigError(attribute.name, "must be a tuple of User")
    tokens = [u.token for u in value]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(attribute.name, "two users share a token")


def _urls(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(u, str) and u for u in value):
        raise ConfigError(attribute.name, "must be a list of URLs")


def _gateway_map(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ConfigError("gateways", "must map cluster names to lists of URLs")
    out: dict[str, tuple[str, ...]] = {}
    for k, v in value.items():
        out[k] = (v,) if isinstance(v, str) else tuple(v)
    return out


def _gateways(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, dict)
    for name, urls in value.items():
        if not isinstance(name, str) or not is_valid_subject(name) or "." in name:
            raise ConfigError("gateways", f"{name!r} is not a valid cluster name")
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ConfigError(f"gateways.{name}", "needs at least one URL")


def _secret(field: str, value: object) -> None:
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError(field, "must be a string of at least 16 characters")


def _secret_or_none(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _secret(attribute.name, value)


def _secret_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("gateway_secrets", "must map cluster names to secrets")
    for name, secret in value.items():
        if not isinstance(name, str) or not is_valid_subject(name) or "." in name:
            raise ConfigError("gateway_secrets", f"{name!r} is not a valid cluster name")
        _secret(f"gateway_secrets.{name}", secret)
    return dict(value)


def _interest_mode(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("optimistic", "interest-only"):
        raise ConfigError(attribute.name, f"must be 'optimistic' or 'interest-only', not {value!r}")


def _policy(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in SLOW_CONSUMER_POLICIES:
        raise ConfigError(attribute.name, f"must be one of {SLOW_CONSUMER_POLICIES}, not {value!r}")


def _tls(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise ConfigError(attribute.name, "must be an ssl.SSLContext or None")


def tls_context_from_files(
    spec: Mapping[str, Any], *, field: str = "tls", client: bool = False
) -> ssl.SSLContext:
    """A TLS context from ``{cert_file, key_file[, ca_file]}``.

    Server side (the default): with ``ca_file``, peers must present a certificate signed
    by it (mutual TLS).  ``client``: the context a node dials with, presenting its own
    certificate and verifying the server against ``ca_file``.  Errors name ``field``."""
    allowed = {"cert_file", "key_file", "ca_file"}
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{field}.{key}", f"unknown key (expected {sorted(allowed)})")
    for key in ("cert_file", "key_file"):
        if not isinstance(spec.get(key), str):
            raise ConfigError(f"{field}.{key}", "is required (a file path)")
    purpose = ssl.Purpose.SERVER_AUTH if client else ssl.Purpose.CLIENT_AUTH
    ctx = ssl.create_default_context(purpose)
    try:
        ctx.load_cert_chain(spec["cert_file"], spec["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{field}.cert_file", f"cannot load the certificate and key: {exc}"
        ) from None
    if "ca_file" in spec:
        try:
            ctx.load_verify_locations(spec["ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{field}.ca_file", f"cannot load: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _peer_tls_from_files(spec: Any, field: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Both sides of mutual TLS between nodes: ``ca_file`` is required."""
    if not isinstance(spec, Mapping):
        raise ConfigError(field, "must be a table with cert_file, key_file and ca_file")
    if not isinstance(spec.get("ca_file"), str):
        raise ConfigError(f"{field}.ca_file", "is required: nodes verify each other (mutual TLS)")
    server = tls_context_from_files(spec, field=field)
    return server, tls_context_from_files(spec, field=field, client=True)


def check_mapping(data: Mapping[str, Any]) -> list[ConfigError]:
    """Every problem in a configuration mapping, not just the first (for ``serve --check``)."""
    errors: list[ConfigError] = []
    fields = {a.name: a for a in attrs.fields(GatewayConfig)}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            errors.append(ConfigError(str(key), "unknown configuration key"))
            continue
        if key in ("users", "tls", "cluster_tls", "gateway_tls"):
            try:
                GatewayConfig.from_mapping({key: value, **_companions(key, data)})
            except ConfigError as exc:
                errors.append(exc)
            except (TypeError, ValueError) as exc:
                errors.append(ConfigError(key, str(exc)))
            continue
        try:
            converted = field.converter(value) if callable(field.converter) else value
            if field.validator is not None:
                field.validator(None, field, converted)
        except ConfigError as exc:
            errors.append(exc)
        except (TypeError, ValueError) as exc:
            errors.append(ConfigError(key, str(exc)))
    if not errors:
        try:
            GatewayConfig.from_mapping(data)
        except ConfigError as exc:
            errors.append(exc)
        except (TypeError, ValueError) as exc:
            errors.append(ConfigError("config", str(exc)))
    return errors


def _companions(key: str, data: Mapping[str, Any]) -> dict[str, Any]:
    # a tls context is only checked together with a tls:// listener
    if key == "tls":
        return {"listen": data.get("listen", "tls://127.0.0.1:0")}
    if key == "cluster_tls":
        return {"cluster_listen": data.get("cluster_listen", "tls://127.0.0.1:0")}
    if key == "gateway_tls":
        return {"gateway_listen": data.get("gateway_listen", "tls://127.0.0.1:0")}
    return {}


def _backbone_tls_from_files(table: Mapping[str, Any]) -> ssl.SSLContext:
    """``[backbone_tls]``: ``ca_file`` (required: the hub's CA), and ``cert_file`` /
    ``key_file`` if the hub wants a client certificate."""
    ca = table.get("ca_file")
    if not isinstance(ca, str):
        raise ConfigError("backbone_tls.ca_file", "is required (the CA of the hub's certificate)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        cert, key = table.get("cert_file"), table.get("key_file")
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("backbone_tls", str(exc)) from None
    return ctx


@attrs.frozen
class GatewayConfig:
    """Everything a node needs.  Every field is validated on construction."""

    #: this node's name (one token)
    name: str = attrs.field(default="meshgate", validator=_name)
    #: the cluster this node belongs to (one token)
    cluster: str = attrs.field(default="meshgate", validator=_name)
    #: client listener: ``host:port`` (TCP) or a URL (``tcp://``, ``tls://``, ``memory://NAME``);
    #: port 0 binds any free port; None disables it
    listen: str | None = attrs.field(default="127.0.0.1:0", validator=_url_or_none)
    #: largest payload a client may publish, in bytes
    max_payload: int = attrs.field(default=1024 * 1024, validator=_positive)
    #: bound on bytes queued for one connection before its slow-consumer policy applies
    max_pending_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    #: what happens when a client passes ``max_pending_bytes``
    slow_consumer_policy: str = attrs.field(default="disconnect", validator=_policy)
    #: coalesce policy: resyncs in a row (backlog dropped while the client stays behind)
    #: before the client is disconnected
    max_resyncs: int = attrs.field(default=3, validator=_non_negative_int)
    #: concurrent client connections
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    #: subscriptions per connection
    max_subscriptions: int = attrs.field(default=10_000, validator=_positive)
    #: seconds a new connection has to complete its handshake
    auth_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: seconds between keepalive pings (a game edge wants a dead peer found in well under
    #: a minute: 15 s x ``max_pings_out`` 2 closes it within 30-45 s; nats-server's 2 min
    #: suits message buses, not players)
    ping_interval: float = attrs.field(default=15.0, validator=_positive)
    #: unanswered pings before a connection is closed as stale
    max_pings_out: int = attrs.field(default=2, validator=_positive)
    #: seconds over which a node in lame-duck mode (SIGTERM, :meth:`Gateway.lame_duck`)
    #: asks its clients to move to other nodes, a few at a time
    lame_duck_duration: float = attrs.field(default=10.0, validator=_non_negative_number)
    #: seconds one write to a connection may take (as nats-server's ``write_deadline``);
    #: a stuck route or gateway is then closed (and redialed), a stuck client closed
    write_deadline: float = attrs.field(default=10.0, validator=_positive)
    #: bind the client, NATS and gateway listeners with ``SO_REUSEPORT``, so that
    #: several node processes of one user (``meshgate serve --workers``) share those
    #: ports and the kernel spreads connections over them; route and monitoring
    #: listeners stay each node's own
    reuse_port: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: seconds a client connection's output may wait to be written with what follows it
    #: (0: written at once, after the batch of input that produced it).  A window of a few
    #: milliseconds, e.g. a fraction of the game's tick, turns many small writes into one
    #: for a bounded added latency (at most the window); routes, gateways and the
    #: backbone are always written at once.  At most 1 s.
    flush_window: float = attrs.field(default=0.0, validator=_flush_window)
    #: token users; when empty, clients connect anonymously to account ``$G``
    users: tuple[User, ...] = attrs.field(default=(), converter=_user_tuple, validator=_users)
    #: TLS for ``tls://`` client listeners
    tls: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: route listener for nodes of the same cluster (URL or ``host:port``); None disables it
    cluster_listen: str | None = attrs.field(default=None, validator=_url_or_none)
    #: mutual TLS for a ``tls://`` route listener: the server context (it must verify the
    #: dialer's certificate); TOML ``[cluster_tls]`` with cert_file, key_file, ca_file
    #: sets both this and ``cluster_tls_dial``
    cluster_tls: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: the context this node dials ``tls://`` routes with (its certificate, the CA)
    cluster_tls_dial: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: seed URLs of other nodes of this cluster; the rest of the cluster is learned by gossip
    routes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_urls)
    #: attempts to reach a URL learned by gossip before it is forgotten (seeds retry forever)
    connect_retries: int = attrs.field(default=5, validator=_non_negative_int)
    #: base delay between reconnect attempts, in seconds (jittered, growing to 10x)
    reconnect_wait: float = attrs.field(default=1.0, validator=_positive)
    #: gateway listener for other clusters (URL or ``host:port``); None disables it
    gateway_listen: str | None = attrs.field(default=None, validator=_url_or_none)
    #: mutual TLS for a ``tls://`` gateway listener (as ``cluster_tls``; TOML
    #: ``[gateway_tls]`` sets both this and ``gateway_tls_dial``)
    gateway_tls: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: the context this node dials ``tls://`` gateways with
    gateway_tls_dial: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: remote cluster name -> gateway URLs; one URL of one cluster is enough (gossip does
    #: the rest); this node's own cluster name is ignored
    gateways: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_gateway_map, validator=_gateways
    )
    #: the secret every node of this cluster presents on its routes (at least 16
    #: characters; never logged); required with ``users`` unless ``trusted_network``
    cluster_secret: str | None = attrs.field(default=None, repr=False, validator=_secret_or_none)
    #: remote cluster name -> the secret both clusters present on the gateway connections
    #: between them; with ``users`` (unless ``trusted_network``), or as soon as any is set,
    #: a cluster without a secret here is refused
    gateway_secrets: Mapping[str, str] = attrs.field(
        factory=dict, repr=False, converter=_secret_map
    )
    #: accept route and gateway peers without credentials although ``users`` are
    #: configured: only where every host that can reach those ports is trusted
    trusted_network: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: refuse inbound gateways from clusters not named in ``gateways``
    reject_unknown: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: ``"optimistic"`` (NATS's original mode; switches per account at the threshold) or
    #: ``"interest-only"`` (this node, as a receiver, asks for positive interest from the start)
    interest_mode: str = attrs.field(default="optimistic", validator=_interest_mode)
    #: no-interest notices per account and connection before switching it to interest-only
    interest_only_threshold: int = attrs.field(default=1000, validator=_positive)
    #: the game layer: route client inputs (``$IN.<entity>``) to entity owners across
    #: hand-overs, follow authority broadcasts (``$AUTH.*``) and announce client interest
    #: to replicants; set it on every node of a super-cluster that serves replicants
    replicants: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: speculative relay: an input sent with ``relay=subject`` matching one of these
    #: patterns is relayed at once to interested clients, marked provisional, and the
    #: owner's confirm/correct reaches exactly the clients that got it (and the sender)
    speculative: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_patterns
    )
    #: subscriptions of clients under this prefix are announced to replicants as
    #: interest deltas on ``$INTEREST.add`` / ``$INTEREST.remove`` ("" disables)
    interest_prefix: str = attrs.field(default="cell.", validator=attrs.validators.instance_of(str))
    #: without ``users``: the token a remote replicant must present (at least 16
    #: characters; never logged); replicants attached in process need none.  With
    #: ``users``, replicants authenticate as users with ``replicant = true``
    replicant_token: str | None = attrs.field(default=None, repr=False, validator=_secret_or_none)
    #: NATS client protocol ports (one URL or a list; ``host:port`` or ``tcp://``,
    #: ``tls://`` with ``tls``, ``ws://``): unmodified NATS clients connect here, as
    #: clients of this node with the same users, accounts, permissions and limits;
    #: none by default
    nats_listen: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_urls)
    #: attach to a nats-server deployment instead of routes and gateways: its leafnode
    #: URLs (``nats://[user:password@ | token@]host:port`` or ``tls://`` with
    #: ``backbone_tls``); the node dials one, fails over to the others and to those the
    #: hub tells it about.  Excludes ``cluster_listen``, ``routes``, ``gateway_listen``
    #: and ``gateways``.  See docs/deploy.md.
    backbone: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_urls)
    #: TLS context for ``tls://`` backbone URLs (TOML ``[backbone_tls]`` with ``ca_file``
    #: and optionally ``cert_file``/``key_file``)
    backbone_tls: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    #: HTTP monitoring endpoint (``host:port``): /varz /connz /routez /gatewayz /subsz
    #: /healthz (JSON) and /metrics (Prometheus text); None disables it
    monitor_listen: str | None = attrs.field(default=None, validator=_url_or_none)

    def __attrs_post_init__(self) -> None:
        if self.listen is not None and self.listen.startswith("tls://") and self.tls is None:
            raise ConfigError("tls", "a tls:// listener needs an ssl.SSLContext")
        if any(u.startswith("tls://") for u in self.nats_listen) and self.tls is None:
            raise ConfigError("nats_listen", "a tls:// listener needs tls (an ssl.SSLContext)")
        for kind in ("cluster", "gateway"):
            self._check_peer_tls(kind)
        if self.max_pending_bytes < self.max_payload:
            raise ConfigError("max_pending_bytes", "must be at least max_payload")
        if self.backbone:
            for field in ("cluster_listen", "gateway_listen", "routes", "gateways"):
                if getattr(self, field):
                    raise ConfigError(
                        field, "a node with a backbone has no routes or gateways of its own"
                    )
            for url in self.backbone:
                scheme = url.split("://", 1)[0] if "://" in url else "nats"
                if scheme not in ("nats", "tcp", "tls"):
                    raise ConfigError("backbone", f"{url!r}: use nats:// or tls:// URLs")
                if scheme == "tls" and self.backbone_tls is None:
                    raise ConfigError("backbone_tls", "tls:// backbone URLs need backbone_tls")
        if self.routes and self.cluster_listen is None:
            raise ConfigError("routes", "needs cluster_listen (routes are two-way)")
        if self.gateways and self.gateway_listen is None:
            raise ConfigError("gateways", "needs gateway_listen (remote clusters dial back)")
        if self.peer_auth_required:
            if self.cluster_listen is not None and self.cluster_secret is None:
                raise ConfigError(
                    "cluster_secret",
                    "a node with users needs a cluster secret for its routes "
                    "(or trusted_network = true on a trusted network)",
                )
            for cluster in self.gateways:
                if cluster != self.cluster and cluster not in self.gateway_secrets:
                    raise ConfigError(
                        f"gateway_secrets.{cluster}",
                        "a node with users needs a secret for each remote cluster "
                        "(or trusted_network = true on a trusted network)",
                    )

    def _check_peer_tls(self, kind: str) -> None:
        listen = getattr(self, f"{kind}_listen")
        server = getattr(self, f"{kind}_tls")
        dial = getattr(self, f"{kind}_tls_dial")
        urls = (
            self.routes if kind == "cluster" else [u for us in self.gateways.values() for u in us]
        )
        if (listen or "").startswith("tls://"):
            if server is None:
                raise ConfigError(f"{kind}_tls", f"a tls:// {kind}_listen needs {kind}_tls")
            if server.verify_mode != ssl.CERT_REQUIRED:
                raise ConfigError(
                    f"{kind}_tls",
                    "must verify the peer's certificate (mutual TLS): load a CA and set "
                    "verify_mode = ssl.CERT_REQUIRED (in TOML: ca_file)",
                )
        if ((listen or "").startswith("tls://") or any(u.startswith("tls://") for u in urls)) and (
            dial is None
        ):
            raise ConfigError(
                f"{kind}_tls",
                f"dialing tls:// {kind} peers needs {kind}_tls_dial (TOML: [{kind}_tls] sets it)",
            )

    @property
    def accounts(self) -> frozenset[str]:
        """The accounts this node serves: its users', or ``$G`` without users."""
        return frozenset({u.account for u in self.users} or {"$G"})

    def _backbone_userinfo(self) -> tuple[str | None, str | None]:
        for url in self.backbone:
            rest = url.split("://", 1)[-1]
            userinfo, at, _ = rest.rpartition("@")
            if at:
                user, colon, password = userinfo.partition(":")
                return (user, password) if colon else (user, None)
        return None, None

    @property
    def backbone_user(self) -> str | None:
        """The user name in the backbone URLs (``user:password@``), if any."""
        user, password = self._backbone_userinfo()
        return user if password is not None else None

    @property
    def backbone_password(self) -> str | None:
        """The password in the backbone URLs, if any."""
        return self._backbone_userinfo()[1]

    @property
    def backbone_token(self) -> str | None:
        """The token in the backbone URLs (``token@``), if any."""
        user, password = self._backbone_userinfo()
        return user if password is None else None

    @property
    def peer_auth_required(self) -> bool:
        """Route and gateway peers must authenticate (users are set and the network is
        not declared trusted)."""
        return bool(self.users) and not self.trusted_network

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Build a config from plain data (as loaded from TOML); unknown keys are errors."""
        fields = {a.name for a in attrs.fields(cls)}
        for key in data:
            if key not in fields:
                raise ConfigError(str(key), "unknown configuration key")
        kw = dict(data)
        for key in ("routes",):
            if key in kw and not isinstance(kw[key], list | tuple):
                raise ConfigError(key, "must be a list of URLs")
        if isinstance(kw.get("tls"), Mapping):
            kw["tls"] = tls_context_from_files(kw["tls"])
        if isinstance(kw.get("backbone_tls"), Mapping):
            kw["backbone_tls"] = _backbone_tls_from_files(kw["backbone_tls"])
        for kind in ("cluster", "gateway"):
            if f"{kind}_tls" in kw:
                for key in (f"{kind}_tls_dial",):
                    if key in kw:
                        raise ConfigError(key, f"is set by the [{kind}_tls] table in TOML")
                kw[f"{kind}_tls"], kw[f"{kind}_tls_dial"] = _peer_tls_from_files(
                    kw[f"{kind}_tls"], f"{kind}_tls"
                )
        if "users" in kw:
            users = []
            for i, u in enumerate(kw["users"]):
                try:
                    u = dict(u)
                    for perm in ("publish", "subscribe"):
                        if perm in u:
                            u[perm] = Permissions(**u[perm])
                    users.append(User(**u))
                except TypeError as exc:
                    raise ConfigError(f"users[{i}]", str(exc)) from None
            kw["users"] = tuple(users)
        return cls(**kw)
