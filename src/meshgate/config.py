"""Configuration classes: validated attrs value objects.

A bad value raises :class:`ConfigError` (a :class:`ValueError`) naming the field.
Secrets (tokens) never appear in ``repr``.
"""

from __future__ import annotations

__all__ = [
    "COMPRESSION_MODES",
    "SLOW_CONSUMER_POLICIES",
    "check_mapping",
    "tls_context_from_files",
    "ConfigError",
    "GatewayConfig",
    "Permissions",
    "User",
]

import ssl
from collections.abc import Callable, Iterable, Mapping
from importlib.util import find_spec
from typing import Any

import attrs

from ._errors import MeshgateError
from .protocol import MAX_PRIORITY
from .subjects import is_valid_pattern, is_valid_subject

#: Allowed values of :attr:`GatewayConfig.slow_consumer_policy`.
SLOW_CONSUMER_POLICIES = ("disconnect", "drop-oldest", "drop-new", "coalesce")


class ConfigError(MeshgateError, ValueError):
    """A configuration value is invalid; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

#: the built-in transports whose URLs are ``host:port`` (``memory://`` takes a name)
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "quic", "webtransport")
#: client listener schemes served with the node's ``tls`` (``[tls]``)
_TLS_SCHEMES = ("tls", "wss")
#: client listener schemes that need the certificate and key files (``[tls]``)
_CERT_FILE_SCHEMES = ("quic", "webtransport")


def _shown(value: object) -> str:
    """A value as it is written in TOML (``true``, not ``True``), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    # one value (a string, or anything else the validator will name) or an iterable
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        return (value,)  # type: ignore[return-value]
    return tuple(value)


def _user_tuple(value: Iterable[User]) -> tuple[User, ...]:
    return tuple(value)


def _positive(unit: str = "") -> _Validator:
    """A number above 0; ``unit`` (" of seconds", " of bytes") goes into the message."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(
                attribute.name, f"must be a positive number{unit}, not {_shown(value)}"
            )

    return check


def _non_negative(unit: str = "") -> _Validator:
    """A number of at least 0; ``unit`` as for :func:`_positive`."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(
                attribute.name, f"must be a non-negative number{unit}, not {_shown(value)}"
            )

    return check


def _max_priority(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _non_negative()(inst, attribute, value)
    assert isinstance(value, int | float)
    if value != value or value > MAX_PRIORITY:
        raise ConfigError(attribute.name, f"must be at most {MAX_PRIORITY:g}, not {_shown(value)}")


_SECONDS = " of seconds"
_BYTES = " of bytes"


def _optional(check: _Validator) -> _Validator:
    """None, or a value ``check`` accepts."""

    def optional(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check(inst, attribute, value)

    return optional


def _flush_window(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _non_negative(_SECONDS)(inst, attribute, value)
    assert isinstance(value, int | float)
    if value > 1.0:
        raise ConfigError(attribute.name, f"must be at most 1 second, not {_shown(value)}")


def _non_negative_int(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(attribute.name, f"must be a non-negative integer, not {_shown(value)}")


def _bool(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(attribute.name, f"must be true or false, not {_shown(value)}")


def _str(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ConfigError(attribute.name, f"must be a string, not {_shown(value)}")


def _name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not is_valid_subject(value) or "." in value:
        raise ConfigError(attribute.name, f"must be a single non-empty token, not {_shown(value)}")


def _patterns(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(attribute.name, "must be a tuple of patterns")
    for p in value:
        if not isinstance(p, str) or not is_valid_pattern(p):
            raise ConfigError(attribute.name, f"{p!r} is not a valid subject pattern")


def _endpoint(
    field: str, url: object, *, listener: bool, schemes: tuple[str, ...] | None = None
) -> tuple[str, str, int]:
    """``(scheme, host or name, port)`` of one configured URL, parsed as the transports
    will parse it, or a :class:`ConfigError` naming ``field`` where they would refuse it.

    ``listener``: the node binds it (port 0 picks a free port); otherwise the node dials
    it (port 1..65535).  ``schemes``: the only schemes allowed, the first for a bare
    ``host:port`` (default: tcp for a bare ``host:port``, and any scheme: one that is
    not tcp, tls or ws names an endpoint, as ``memory://NAME``; whether a transport
    serves it is :func:`check_mapping`'s question, as a node simulated without
    transports has its own).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(field, f"must be a URL or host:port, not {_shown(url)}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = (schemes or ("tcp",))[0], url
    if schemes is not None and scheme not in schemes:
        if schemes == ("tcp",):
            raise ConfigError(field, f"{url!r}: write host:port (plain HTTP over TCP)")
        expected = ", ".join(f"{s}://" for s in schemes[:-1]) + f" or {schemes[-1]}://"
        raise ConfigError(field, f"{url!r}: use {expected} URLs")
    if scheme in ("ws", "wss") and find_spec("trio_websocket") is None:
        raise ConfigError(field, f"{url!r}: {scheme}:// needs pip install 'meshgate[websocket]'")
    if scheme in _CERT_FILE_SCHEMES and find_spec("aioquic") is None:
        raise ConfigError(field, f"{url!r}: {scheme}:// needs pip install 'meshgate[quic]'")
    if scheme not in (*_HOST_PORT_SCHEMES, "nats"):  # a named endpoint (memory://NAME)
        if not listener and not rest:
            raise ConfigError(field, f"{url!r} names nothing to dial")
        return scheme, rest, 0
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    port_text: str | None
    if netloc.startswith("["):  # [IPv6]:port
        host, bracket, after = netloc[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(field, f"{url!r} is not host:port")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = netloc.rpartition(":")
        if not colon:
            host, port_text = netloc, None
        elif ":" in host:
            raise ConfigError(field, f"{url!r}: write an IPv6 address in brackets ([::1]:4222)")
    if not host:
        every = " (0.0.0.0:PORT listens on every interface)" if listener else ""
        raise ConfigError(field, f"{url!r} has no host{every}")
    if not port_text:
        raise ConfigError(field, f"{url!r} has no port (write {host}:PORT)")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(field, f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if listener else 1
    if not low <= port <= 65535:
        dialed = "" if listener else " (a port this node dials)"
        raise ConfigError(field, f"port {port} is out of range {low}..65535{dialed}")
    return scheme, host, port


def _entries(field: str, values: tuple[object, ...]) -> list[tuple[str, object]]:
    """``(name, value)`` per entry of a list field: ``field[i]`` when it has several."""
    if len(values) == 1:
        return [(field, values[0])]
    return [(f"{field}[{i}]", v) for i, v in enumerate(values)]


def _listener(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _endpoint(attribute.name, value, listener=True)


def _listen_urls(value: object) -> object:
    """``listen``: one URL stays a string, a list becomes a tuple (one entry: a string)."""
    if isinstance(value, list | tuple):
        return value[0] if len(value) == 1 else tuple(value)
    return value


def _client_listeners(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or isinstance(value, str):
        _listener(inst, attribute, value)
        return
    if not isinstance(value, tuple) or not value:
        raise ConfigError(attribute.name, "must be a URL or a non-empty list of URLs")
    for name, url in _entries(attribute.name, value):
        _endpoint(name, url, listener=True)


def _monitor_listener(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:  # plain HTTP over TCP
        _endpoint(attribute.name, value, listener=True, schemes=("tcp",))


def _listeners(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(attribute.name, "must be a URL or a list of URLs")
    for name, url in _entries(attribute.name, value):
        _endpoint(name, url, listener=True)


def _dial_urls(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(attribute.name, "must be a list of URLs")
    for name, url in _entries(attribute.name, value):
        _endpoint(name, url, listener=False)


def _backbone_urls(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(attribute.name, "must be a URL or a list of URLs")
    for name, url in _entries(attribute.name, value):
        _endpoint(name, url, listener=False, schemes=("nats", "tcp", "tls"))


def _placement_hint(table: str, key: object) -> str:
    """For a key that is a top-level setting found inside a table: why it is there."""
    if key not in {a.name for a in attrs.fields(GatewayConfig)}:
        return ""
    return (
        f"; {key!r} is a top-level setting, but TOML puts every key after {table} into "
        "that table: move it above the first table"
    )


def _known_keys_only(
    field: str, table: Mapping[Any, Any], known: tuple[str, ...], header: str
) -> None:
    """Refuse the first key of ``table`` that is not ``known``, naming the table (and
    index) as ``field``; ``header`` is how the table is written in TOML."""
    for key in table:
        if key not in known:
            hint = _placement_hint(header, key)
            raise ConfigError(field, f"unknown key {key!r} (known: {', '.join(known)}){hint}")


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
    allow_responses: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen
class User:
    """A user authenticating with ``token``, bound to ``account``."""

    token: str = attrs.field(repr=False)
    account: str = attrs.field(default="$G", validator=_name)
    name: str = attrs.field(default="user", validator=_str)
    publish: Permissions = attrs.field(factory=Permissions)
    subscribe: Permissions = attrs.field(factory=Permissions)
    #: a replicant credential: may connect with role ``replicant`` (claim, release,
    #: receive inputs, confirm and correct); ordinary users may not
    replicant: bool = attrs.field(default=False, validator=_bool)
    #: this user's per-client bandwidth budget in bytes per second (overrides the node's
    #: ``client_bandwidth`` for its client connections); None: the node's
    client_bandwidth: int | None = attrs.field(default=None, validator=_optional(_positive(_BYTES)))
    #: the highest publisher priority this user's connections may give (issue 21;
    #: docs/scheduling.md): a higher one is lowered to it; 0 (the default): their
    #: priorities are ignored (counted in ``priority_ignored``).  At most ``MAX_PRIORITY``
    max_priority: float = attrs.field(default=0.0, validator=_max_priority)

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


_USER_KEYS = (
    "account",
    "client_bandwidth",
    "max_priority",
    "name",
    "publish",
    "replicant",
    "subscribe",
    "token",
)
_PERMISSION_KEYS = ("allow", "allow_responses", "deny")
_TLS_KEYS = ("ca_file", "cert_file", "key_file")


def _permissions_from_data(field: str, value: object) -> Permissions:
    """``users[i].publish`` / ``.subscribe``: a table of ``allow``, ``deny``,
    ``allow_responses``; errors name ``field``."""
    if isinstance(value, Permissions):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"must be a table of {', '.join(_PERMISSION_KEYS)}")
    _known_keys_only(field, value, _PERMISSION_KEYS, f"[users.{field.rpartition('.')[2]}]")
    try:
        return Permissions(**value)
    except ConfigError as exc:
        raise ConfigError(f"{field}.{exc.field}", exc.problem) from None


def _user_from_data(field: str, value: object) -> User:
    """One ``[[users]]`` table; errors name ``field`` (``users[i]``)."""
    if isinstance(value, User):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"must be a table with a token, not {_shown(value)}")
    _known_keys_only(field, value, _USER_KEYS, "[[users]]")
    if "token" not in value:
        raise ConfigError(field, "needs a token (a string of at least 8 characters)")
    kw = dict(value)
    for perm in ("publish", "subscribe"):
        if perm in kw:
            kw[perm] = _permissions_from_data(f"{field}.{perm}", kw[perm])
    try:
        return User(**kw)
    except ConfigError as exc:
        if exc.field.startswith("users."):  # the token's own message, never its value
            raise
        raise ConfigError(f"{field}.{exc.field}", exc.problem) from None


def _users_from_data(value: object) -> tuple[tuple[User, ...], list[ConfigError]]:
    """The ``[[users]]`` array: the users it defines and every entry's first error."""
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        return (), [ConfigError("users", "must be an array of tables: write [[users]]")]
    users: list[User] = []
    errors: list[ConfigError] = []
    for i, entry in enumerate(value):
        try:
            users.append(_user_from_data(f"users[{i}]", entry))
        except ConfigError as exc:
            errors.append(exc)
    return tuple(users), errors


def _gateway_map(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ConfigError("gateways", "must map cluster names to lists of URLs")
    out: dict[str, tuple[str, ...]] = {}
    for k, v in value.items():
        if isinstance(v, str):
            out[k] = (v,)
        elif isinstance(v, list | tuple):
            out[k] = tuple(v)
        else:
            hint = _placement_hint("[gateways]", k)
            raise ConfigError(
                f"gateways.{k}", f"must be a URL or a list of URLs, not {_shown(v)}{hint}"
            )
    return out


def _gateways(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, dict)
    for name, urls in value.items():
        if not isinstance(name, str) or not is_valid_subject(name) or "." in name:
            raise ConfigError("gateways", f"{name!r} is not a valid cluster name")
        if not urls:
            raise ConfigError(f"gateways.{name}", "needs at least one URL")
        for field, url in _entries(f"gateways.{name}", urls):
            try:
                _endpoint(field, url, listener=False)
            except ConfigError as exc:
                hint = _placement_hint("[gateways]", name)
                raise ConfigError(exc.field, exc.problem + hint) from None


def _secret(field: str, value: object, hint: str = "") -> None:
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError(field, f"must be a string of at least 16 characters{hint}")


def _secret_or_none(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _secret(attribute.name, value)


def _secret_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("gateway_secrets", "must map cluster names to secrets")
    for name, secret in value.items():
        if not isinstance(name, str) or not is_valid_subject(name) or "." in name:
            raise ConfigError("gateway_secrets", f"{name!r} is not a valid cluster name")
        _secret(f"gateway_secrets.{name}", secret, _placement_hint("[gateway_secrets]", name))
    return dict(value)


def _interest_mode(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("optimistic", "interest-only"):
        raise ConfigError(
            attribute.name, f"must be 'optimistic' or 'interest-only', not {_shown(value)}"
        )


#: the modes of ``cluster_compression`` and ``gateway_compression``
COMPRESSION_MODES = ("off", "on", "auto")


def _compression(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in COMPRESSION_MODES:
        raise ConfigError(attribute.name, f"must be 'off', 'on' or 'auto', not {_shown(value)}")


def _policy(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in SLOW_CONSUMER_POLICIES:
        raise ConfigError(
            attribute.name, f"must be one of {SLOW_CONSUMER_POLICIES}, not {_shown(value)}"
        )


def _tls(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise ConfigError(
            attribute.name,
            f"must be a [{attribute.name}] table of files or an ssl.SSLContext, not {value!r}",
        )


def tls_context_from_files(
    spec: Mapping[str, Any], *, field: str = "tls", client: bool = False
) -> ssl.SSLContext:
    """A TLS context from ``{cert_file, key_file[, ca_file]}``.

    Server side (the default): with ``ca_file``, peers must present a certificate signed
    by it (mutual TLS).  ``client``: the context a node dials with, presenting its own
    certificate and verifying the server against ``ca_file``.  Errors name ``field``."""
    if not isinstance(spec, Mapping):
        raise ConfigError(field, "must be a table with cert_file, key_file and optionally ca_file")
    _known_keys_only(field, spec, _TLS_KEYS, f"[{field}]")
    for key in ("cert_file", "key_file"):
        path = spec.get(key)
        if not isinstance(path, str):
            raise ConfigError(f"{field}.{key}", "is required (a file path)")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{field}.{key}", f"cannot load {path!r}: {exc.strerror}") from None
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


def _without_transport(field: str, value: object) -> list[ConfigError]:
    """The URLs of a valid listener or dial field whose scheme no transport of this
    process serves (as ``meshgate serve`` would find when it starts)."""
    from .transports import get_transport  # the transports registered in this process

    if field == "gateways":
        assert isinstance(value, dict)
        urls = [e for name, us in value.items() for e in _entries(f"gateways.{name}", us)]
    elif isinstance(value, tuple):
        urls = _entries(field, value)
    else:
        urls = [] if value is None else [(field, value)]
    errors = []
    for name, url in urls:
        assert isinstance(url, str)
        try:
            get_transport(url)
        except MeshgateError:
            scheme = url.partition("://")[0]
            errors.append(
                ConfigError(
                    name,
                    f"{url!r}: no transport for {scheme}:// (tcp, tls, ws, memory, or one "
                    "added with meshgate.transports.register_transport)",
                )
            )
    return errors


#: the fields whose URLs a transport must serve (monitor_listen and backbone take
#: fixed schemes)
_TRANSPORT_FIELDS = (
    "listen",
    "cluster_listen",
    "gateway_listen",
    "nats_listen",
    "routes",
    "gateways",
)


def check_mapping(data: Mapping[str, Any]) -> list[ConfigError]:
    """Every problem in a configuration mapping, not just the first (for ``serve --check``).

    Beyond what :class:`GatewayConfig` checks, every listener and dialed URL needs a
    transport registered in this process (:func:`meshgate.transports.register_transport`)."""
    errors: list[ConfigError] = []
    fields = {a.name: a for a in attrs.fields(GatewayConfig)}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            errors.append(ConfigError(str(key), "unknown configuration key"))
            continue
        if key == "users":
            users, user_errors = _users_from_data(value)
            errors.extend(user_errors)
            if not user_errors:
                try:
                    _users(None, field, users)
                except ConfigError as exc:
                    errors.append(exc)
            continue
        if key in ("tls", "cluster_tls", "gateway_tls", "backbone_tls"):
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
            if key in _TRANSPORT_FIELDS:
                errors.extend(_without_transport(key, converted))
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


def _overlaps(host: str, other: str) -> bool:
    """A wildcard address and an address of the same family bind the same port."""
    for wildcard, v6 in (("0.0.0.0", False), ("::", True)):
        for a, b in ((host, other), (other, host)):
            if a == wildcard and (":" in b) == v6:
                return True
    return False


def _backbone_tls_from_files(table: Mapping[str, Any]) -> ssl.SSLContext:
    """``[backbone_tls]``: ``ca_file`` (required: the hub's CA), and ``cert_file`` /
    ``key_file`` if the hub wants a client certificate."""
    if not isinstance(table, Mapping):
        raise ConfigError("backbone_tls", "must be a table with ca_file (cert_file, key_file)")
    _known_keys_only("backbone_tls", table, _TLS_KEYS, "[backbone_tls]")
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
    #: client listener(s): ``host:port`` (TCP) or a URL (``tcp://``, ``tls://``, ``ws://``,
    #: ``wss://``, ``quic://``, ``memory://NAME``), or a list of them (TOML ``listen =
    #: [...]``); port 0 binds any free port; None disables it.  ``tls://`` and ``wss://``
    #: need ``tls``; ``quic://`` needs ``tls_cert_file`` and ``tls_key_file``
    listen: str | tuple[str, ...] | None = attrs.field(
        default="127.0.0.1:0", converter=_listen_urls, validator=_client_listeners
    )
    #: largest payload a client may publish, in bytes
    max_payload: int = attrs.field(default=1024 * 1024, validator=_positive(_BYTES))
    #: bound on bytes queued for one connection before its slow-consumer policy applies
    max_pending_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_positive(_BYTES))
    #: what happens when a client passes ``max_pending_bytes``
    slow_consumer_policy: str = attrs.field(default="disconnect", validator=_policy)
    #: coalesce policy: resyncs in a row (backlog dropped while the client stays behind)
    #: before the client is disconnected
    max_resyncs: int = attrs.field(default=3, validator=_non_negative_int)
    #: per-client bandwidth budget in bytes per second on the wire (docs/scheduling.md):
    #: reliable traffic goes first, keyed state shares the rest by accumulated priority;
    #: a user's own ``client_bandwidth`` overrides it.  None: unlimited (no scheduler)
    client_bandwidth: int | None = attrs.field(default=None, validator=_optional(_positive(_BYTES)))
    #: seconds between send ticks of clients with a budget
    send_interval: float = attrs.field(default=0.05, validator=_positive(_SECONDS))
    #: keys one client's scheduler tracks at most (its held values are bounded by
    #: ``max_pending_bytes``); when full, policy ``refuse-new`` (counted)
    scheduler_max_keys: int = attrs.field(default=4096, validator=_positive())
    #: deltas against acknowledged keyed state (docs/scheduling.md): a client that
    #: announces the node's delta codec acknowledges keyed values, and gets the next
    #: values of a key as deltas against the last one it acknowledged.  Per client at
    #: most ``scheduler_max_keys`` keys and ``max_pending_bytes`` of kept values
    keyed_deltas: bool = attrs.field(default=False, validator=_bool)
    #: concurrent client connections
    max_connections: int = attrs.field(default=10_000, validator=_positive())
    #: subscriptions per connection
    max_subscriptions: int = attrs.field(default=10_000, validator=_positive())
    #: seconds a new connection has to complete its handshake
    auth_timeout: float = attrs.field(default=2.0, validator=_positive(_SECONDS))
    #: seconds between keepalive pings (a game edge wants a dead peer found in well under
    #: a minute: 15 s x ``max_pings_out`` 2 closes it within 30-45 s; nats-server's 2 min
    #: suits message buses, not players)
    ping_interval: float = attrs.field(default=15.0, validator=_positive(_SECONDS))
    #: unanswered pings before a connection is closed as stale
    max_pings_out: int = attrs.field(default=2, validator=_positive())
    #: seconds over which a node in lame-duck mode (SIGTERM, :meth:`Gateway.lame_duck`)
    #: asks its clients to move to other nodes, a few at a time
    lame_duck_duration: float = attrs.field(default=10.0, validator=_non_negative(_SECONDS))
    #: seconds one write to a connection may take (as nats-server's ``write_deadline``);
    #: a stuck route or gateway is then closed (and redialed), a stuck client closed
    write_deadline: float = attrs.field(default=10.0, validator=_positive(_SECONDS))
    #: seconds a route, gateway or backbone link may take nothing while output waits for
    #: it before it is closed as a slow consumer and redialed (nats-server 2.12's
    #: per-link ``write_deadline``); None: ``write_deadline``
    peer_write_deadline: float | None = attrs.field(
        default=None, validator=_optional(_positive(_SECONDS))
    )
    #: bytes a route, gateway or backbone link may hold queued before it is closed as a
    #: slow consumer and redialed (publishers are held back from ``max_pending_bytes`` on,
    #: while the link drains); at least ``max_pending_bytes``.  None: 8 x
    #: ``max_pending_bytes`` (64 MiB by default)
    peer_max_pending_bytes: int | None = attrs.field(
        default=None, validator=_optional(_positive(_BYTES))
    )
    #: bind the client, NATS and gateway listeners with ``SO_REUSEPORT``, so that
    #: several node processes of one user (``meshgate serve --workers``) share those
    #: ports and the kernel spreads connections over them; route and monitoring
    #: listeners stay each node's own
    reuse_port: bool = attrs.field(default=False, validator=_bool)
    #: seconds a client connection's output may wait to be written with what follows it
    #: (0: written at once, after the batch of input that produced it).  A window of a few
    #: milliseconds, e.g. a fraction of the game's tick, turns many small writes into one
    #: for a bounded added latency (at most the window); routes, gateways and the
    #: backbone are always written at once.  At most 1 s.
    flush_window: float = attrs.field(default=0.0, validator=_flush_window)
    #: token users; when empty, clients connect anonymously to account ``$G``
    users: tuple[User, ...] = attrs.field(default=(), converter=_user_tuple, validator=_users)
    #: TLS for ``tls://`` and ``wss://`` client listeners (TOML ``[tls]`` with
    #: ``cert_file`` and ``key_file`` sets it and the two fields below)
    tls: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: the node's certificate chain and key (PEM files) for ``quic://`` client
    #: listeners (QUIC's TLS 1.3 is aioquic's own: it cannot use an ``ssl.SSLContext``)
    tls_cert_file: str | None = attrs.field(default=None, validator=_optional(_str))
    tls_key_file: str | None = attrs.field(default=None, validator=_optional(_str))
    #: limits of ``quic://`` listeners (None: :class:`meshgate.transports.QuicLimits`
    #: defaults): handshakes in flight, connections, streams, idle timeout
    quic_limits: Any = attrs.field(default=None, eq=False)
    #: keyed messages to a datagram-capable client (QUIC): every Nth update of a key
    #: goes on the reliable stream instead of a datagram (a lost last value is
    #: repaired within N updates); 0: never
    datagram_refresh: int = attrs.field(default=8, validator=_non_negative_int)
    #: route listener for nodes of the same cluster (URL or ``host:port``); None disables it
    cluster_listen: str | None = attrs.field(default=None, validator=_listener)
    #: mutual TLS for a ``tls://`` route listener: the server context (it must verify the
    #: dialer's certificate); TOML ``[cluster_tls]`` with cert_file, key_file, ca_file
    #: sets both this and ``cluster_tls_dial``
    cluster_tls: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: the context this node dials ``tls://`` routes with (its certificate, the CA)
    cluster_tls_dial: ssl.SSLContext | None = attrs.field(default=None, validator=_tls, eq=False)
    #: seed URLs of other nodes of this cluster; the rest of the cluster is learned by gossip
    routes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=_dial_urls)
    #: attempts to reach a URL learned by gossip before it is forgotten (seeds retry forever)
    connect_retries: int = attrs.field(default=5, validator=_non_negative_int)
    #: base delay between reconnect attempts, in seconds (jittered, growing to 10x)
    reconnect_wait: float = attrs.field(default=1.0, validator=_positive(_SECONDS))
    #: gateway listener for other clusters (URL or ``host:port``); None disables it
    gateway_listen: str | None = attrs.field(default=None, validator=_listener)
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
    trusted_network: bool = attrs.field(default=False, validator=_bool)
    #: refuse inbound gateways from clusters not named in ``gateways``
    reject_unknown: bool = attrs.field(default=False, validator=_bool)
    #: ``"optimistic"`` (NATS's original mode; switches per account at the threshold) or
    #: ``"interest-only"`` (this node, as a receiver, asks for positive interest from the start)
    interest_mode: str = attrs.field(default="optimistic", validator=_interest_mode)
    #: no-interest notices per account and connection before switching it to interest-only
    interest_only_threshold: int = attrs.field(default=1000, validator=_positive())
    #: lz4 compression of route links (needs the ``compression`` extra): ``"off"``,
    #: ``"on"`` (compress whenever the peer can), or ``"auto"`` (compress when the
    #: dialing node's connect round trip is ``compression_auto_rtt`` or more, or the
    #: peer says ``"on"``); a peer with ``"off"`` or without the library gets an
    #: uncompressed link
    cluster_compression: str = attrs.field(default="off", validator=_compression)
    #: the same for gateway links (between clusters, where bandwidth costs)
    gateway_compression: str = attrs.field(default="off", validator=_compression)
    #: ``"auto"`` compression: the connect round trip (seconds) from which a dialed
    #: route or gateway link asks for compression
    compression_auto_rtt: float = attrs.field(default=0.010, validator=_non_negative(_SECONDS))
    #: the game layer: route client inputs (``$IN.<entity>``) to entity owners across
    #: hand-overs, follow authority broadcasts (``$AUTH.*``) and announce client interest
    #: to replicants; set it on every node of a super-cluster that serves replicants
    replicants: bool = attrs.field(default=False, validator=_bool)
    #: speculative relay: an input sent with ``relay=subject`` matching one of these
    #: patterns is relayed at once to interested clients, marked provisional, and the
    #: owner's confirm/correct reaches exactly the clients that got it (and the sender)
    speculative: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_patterns
    )
    #: subscriptions of clients under this prefix are announced to replicants as
    #: interest deltas on ``$INTEREST.add`` / ``$INTEREST.remove`` ("" disables)
    interest_prefix: str = attrs.field(default="cell.", validator=_str)
    #: without ``users``: the token a remote replicant must present (at least 16
    #: characters; never logged); replicants attached in process need none.  With
    #: ``users``, replicants authenticate as users with ``replicant = true``
    replicant_token: str | None = attrs.field(default=None, repr=False, validator=_secret_or_none)
    #: NATS client protocol ports (one URL or a list; ``host:port`` or ``tcp://``,
    #: ``tls://`` with ``tls``, ``ws://``): unmodified NATS clients connect here, as
    #: clients of this node with the same users, accounts, permissions and limits;
    #: none by default
    nats_listen: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_listeners
    )
    #: attach to a nats-server deployment instead of routes and gateways: its leafnode
    #: URLs (``nats://[user:password@ | token@]host:port`` or ``tls://`` with
    #: ``backbone_tls``); the node dials one, fails over to the others and to those the
    #: hub tells it about.  Excludes ``cluster_listen``, ``routes``, ``gateway_listen``
    #: and ``gateways``.  See docs/deploy.md.
    backbone: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_backbone_urls
    )
    #: TLS context for ``tls://`` backbone URLs (TOML ``[backbone_tls]`` with ``ca_file``
    #: and optionally ``cert_file``/``key_file``)
    backbone_tls: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    #: HTTP monitoring endpoint (``host:port``): /varz /connz /routez /gatewayz /subsz
    #: /healthz (JSON) and /metrics (Prometheus text); None disables it
    monitor_listen: str | None = attrs.field(default=None, validator=_monitor_listener)

    def __attrs_post_init__(self) -> None:
        for _, url in self.client_listeners:
            scheme = url.partition("://")[0] if "://" in url else "tcp"
            if scheme in _TLS_SCHEMES and self.tls is None:
                raise ConfigError("tls", f"a {scheme}:// listener needs an ssl.SSLContext")
            if scheme in _CERT_FILE_SCHEMES:
                for key in ("tls_cert_file", "tls_key_file"):
                    if getattr(self, key) is None:
                        raise ConfigError(
                            f"tls.{key[4:]}",
                            f"a {scheme}:// listener needs it ([tls] {key[4:]}, or "
                            f"GatewayConfig.{key})",
                        )
        if any(u.startswith("tls://") for u in self.nats_listen) and self.tls is None:
            raise ConfigError("nats_listen", "a tls:// listener needs tls (an ssl.SSLContext)")
        for kind in ("cluster", "gateway"):
            self._check_peer_tls(kind)
        self._check_listener_addresses()
        if self.max_pending_bytes < self.max_payload:
            raise ConfigError(
                "max_pending_bytes",
                f"must be at least max_payload ({self.max_payload} bytes), "
                f"not {self.max_pending_bytes} bytes",
            )
        if self.peer_max_pending_bytes is not None and (
            self.peer_max_pending_bytes < self.max_pending_bytes
        ):
            raise ConfigError(
                "peer_max_pending_bytes",
                f"must be at least max_pending_bytes ({self.max_pending_bytes} bytes), "
                f"not {self.peer_max_pending_bytes} bytes",
            )
        if self.backbone:
            for field in ("cluster_listen", "gateway_listen", "routes", "gateways"):
                if getattr(self, field):
                    raise ConfigError(
                        field, "a node with a backbone has no routes or gateways of its own"
                    )
            for url in self.backbone:
                if url.startswith("tls://") and self.backbone_tls is None:
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

    @property
    def listeners(self) -> tuple[tuple[str, str], ...]:
        """Every address the node listens on, as ``(field, url)`` in the order it binds
        them: ``listen``, ``cluster_listen``, ``gateway_listen``, each ``nats_listen``
        entry (``nats_listen[i]`` when there are several), ``monitor_listen``; fields
        set to None are left out.  Errors about a listener name its field this way."""
        out = list(self.client_listeners)
        single = (
            ("cluster_listen", self.cluster_listen),
            ("gateway_listen", self.gateway_listen),
        )
        out.extend((field, url) for field, url in single if url is not None)
        out.extend(_entries("nats_listen", self.nats_listen))  # type: ignore[arg-type]
        if self.monitor_listen is not None:
            out.append(("monitor_listen", self.monitor_listen))
        return tuple(out)

    @property
    def client_listeners(self) -> tuple[tuple[str, str], ...]:
        """The client listeners as ``(field, url)``: ``listen``, or ``listen[i]`` for each
        entry of a list."""
        listen = self.listen
        if listen is None:
            return ()
        if isinstance(listen, str):
            return (("listen", listen),)
        return tuple(_entries("listen", listen))  # type: ignore[arg-type]

    def _check_listener_addresses(self) -> None:
        """Refuse two listeners on one address: the second could not bind (or, with
        ``reuse_port``, would take half the first's connections)."""
        seen: list[tuple[str, str, str, int]] = []
        for field, url in self.listeners:
            scheme, host, port = _endpoint(field, url, listener=True)
            if not port and not (scheme == "memory" and host):
                continue  # a free port (or a fresh name) every time
            for other, other_scheme, other_host, other_port in seen:
                if (
                    (scheme == "memory") != (other_scheme == "memory")
                    or port != other_port
                    # UDP (QUIC) and TCP ports are separate
                    or (scheme in _CERT_FILE_SCHEMES) != (other_scheme in _CERT_FILE_SCHEMES)
                ):
                    continue
                if host == other_host or _overlaps(host, other_host):
                    raise ConfigError(field, f"{url!r}: the same address as {other}")
            seen.append((field, scheme, host, port))

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
    def link_write_deadline(self) -> float:
        """Seconds a route, gateway or backbone link may take nothing while output waits
        for it: ``peer_write_deadline``, or ``write_deadline`` if that is None."""
        return self.write_deadline if self.peer_write_deadline is None else self.peer_write_deadline

    @property
    def link_max_pending_bytes(self) -> int:
        """Bytes a route, gateway or backbone link may hold queued:
        ``peer_max_pending_bytes``, or 8 x ``max_pending_bytes`` if that is None."""
        bound = self.peer_max_pending_bytes
        return 8 * self.max_pending_bytes if bound is None else bound

    @property
    def scheduling(self) -> bool:
        """Some client has a bandwidth budget: the node runs a send tick."""
        return self.client_bandwidth is not None or any(
            u.client_bandwidth is not None for u in self.users
        )

    def bandwidth_for(self, user: User | None) -> int | None:
        """The budget of a client connection of ``user`` (None: unlimited)."""
        if user is not None and user.client_bandwidth is not None:
            return user.client_bandwidth
        return self.client_bandwidth

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
            table = kw["tls"]
            for key in ("tls_cert_file", "tls_key_file"):
                if key in kw:
                    raise ConfigError(key, "is set by the [tls] table in TOML")
            kw["tls"] = tls_context_from_files(table)
            kw["tls_cert_file"] = table["cert_file"]
            kw["tls_key_file"] = table["key_file"]
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
            users, errors = _users_from_data(kw["users"])
            if errors:
                raise errors[0]
            kw["users"] = users
        return cls(**kw)
