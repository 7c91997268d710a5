from __future__ import annotations

from pathlib import Path

import pytest

from meshgate import ConfigError, GatewayConfig, Permissions, User


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
