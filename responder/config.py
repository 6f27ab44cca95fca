"""Service configuration: a YAML file, every field overridable by a `RESPONDER_*` environment variable.

Precedence (highest first): command-line options, environment, the YAML file, the embedded default.
Nested fields use `__` in the environment (`RESPONDER_KAFKA__BOOTSTRAP_SERVERS`). Secrets come from the
environment or from files (`RESPONDER_OKTA_SECRET` or `RESPONDER_OKTA_SECRET_FILE`) and are `SecretStr`:
they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from responder.core.events import MAX_CLOCK_SKEW
from responder.ingest.payload import MAX_PAYLOAD_BYTES

DEFAULT_LAB_INVENTORY = Path("/run/responder-lab/rsp/inventory.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1024)


class KafkaTopic(_Section):
    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    format: str = Field(min_length=1, description="A connector in connectors/ (wazuh, elastic, ocsf, splunk, ...)")


class Kafka(_Section):
    bootstrap_servers: str = Field(min_length=1)
    group_id: str = "responder"
    topics: tuple[KafkaTopic, ...] = ()
    dead_letter_topic: str = "responder.dead-letter"
    ingest_topic: str | None = Field(
        default=None, description="Publish webhook events here, keyed by subject, to scale out"
    )
    max_in_flight: int = Field(default=1000, ge=1)
    parse_workers: int = Field(
        default=0, ge=0, le=64,
        description="Processes that parse SIEM alerts beside the event loop, for busy topics (0: none)",
    )  # fmt: skip
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None


class Ssf(_Section):
    issuer: str = Field(min_length=1, description="The transmitter's iss")
    audience: str = Field(min_length=1, description="This receiver's aud")
    jwks_file: Path | None = None
    jwks_url: str | None = None
    path: str = "/hooks/ssf"

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file and jwks_url")
        return self


class Limits(_Section):
    actions_per_minute: int = Field(default=120, ge=1)
    actions_per_minute_per_rule: int = Field(default=30, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RESPONDER_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    listen: Listen = Listen()
    inventory: Path | None = Field(
        default=None, description="Hub inventory; default: the local lab's, or dry-run where there is none"
    )
    rules: tuple[Path, ...] = (Path("rules"),)
    connectors: Path = Field(default=Path("connectors"), description="SIEM alert format mappings")
    journal: str = Field(
        default="sqlite:///var/lib/responder/journal.db",
        description="sqlite:///PATH (embedded) or postgresql://... (several instances)",
    )
    kafka: Kafka | None = None
    ssf: Ssf | None = None
    dry_run: bool = False
    instance: str | None = Field(
        default=None,
        description="This instance's name, stable across restarts (default: the host name); it owns its events",
    )
    limits: Limits = Limits()
    max_clock_skew_s: float = Field(
        default=MAX_CLOCK_SKEW.total_seconds(), ge=0,
        description="How far ahead of its receipt an event's time may lie; a later one counts as received then",
    )  # fmt: skip
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    monitor_interval_s: float | None = Field(
        default=10.0, gt=0, description="How often the hub monitor reads each hub; null turns it off"
    )
    monitor_stale_after_s: float = Field(
        default=300.0, gt=0, description="A handshake older than this, with keepalive on, is stale"
    )

    okta_secret: SecretStr | None = None
    okta_secret_file: Path | None = None
    entra_client_state: SecretStr | None = None
    entra_client_state_file: Path | None = None
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    ssf_authorization: SecretStr | None = None
    ssf_authorization_file: Path | None = None
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = None

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        for name in ("okta_secret", "entra_client_state", "admin_token", "ssf_authorization", "kafka_password"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is not None:
                if getattr(self, name) is not None:
                    raise ValueError(f"set {name} or {name}_file, not both")
                try:
                    value = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(f"{name}_file {path}: {exc.strerror}") from None
                if not value:
                    raise ValueError(f"{name}_file {path} is empty")
                object.__setattr__(self, name, SecretStr(value))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config` (YAML), the environment and `overrides` (command-line options)."""
    cls: type[Settings] = Settings
    if config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file {config} does not exist")
        # A subclass per file: pydantic-settings reads the YAML path from the class's model_config.
        config_dict = {**Settings.model_config, "yaml_file": config}
        cls = cast("type[Settings]", type("Settings", (Settings,), {"model_config": config_dict}))
    return cls(**{k: v for k, v in overrides.items() if v is not None})
