"""Service configuration: a YAML file, every field overridable by a `RESPONDER_*` environment variable.

Precedence (highest first): command-line options, environment, the YAML file, the embedded default.
Nested fields use `__` in the environment (`RESPONDER_KAFKA__BOOTSTRAP_SERVERS`). Secrets come from the
environment or from files (`RESPONDER_OKTA_SECRET` or `RESPONDER_OKTA_SECRET_FILE`) and are `SecretStr`:
they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal, Self, cast
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from responder.core.events import MAX_CLOCK_SKEW
from responder.ingest.payload import MAX_PAYLOAD_BYTES

DEFAULT_LAB_INVENTORY = Path("/run/responder-lab/rsp/inventory.yaml")
MIN_SECRET_CHARS = 16
MIN_LINK_KEY_BYTES = 32  # an HMAC-SHA256 key as long as its output
# The secrets that authenticate a caller: an empty or guessable one would let anyone in. (The Kafka
# password is the broker's to judge.)
AUTHENTICATING_SECRETS = (
    "okta_secret", "entra_client_state", "admin_token", "ssf_authorization", "slack_signing_secret", "link_key",
)  # fmt: skip
# The credentials the responder presents to others (Kafka, Okta, Graph) are theirs to judge; an Okta API
# token's length is checked by `_okta_credentials`, a service app's key by its kind and size.
SECRETS = (*AUTHENTICATING_SECRETS, "kafka_password", "okta_api_token", "okta_private_key", "entra_client_secret")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1024)
    max_connections: int = Field(
        default=4096, ge=1,
        description="HTTP connections open at once; beyond, a connection gets an immediate 503 and is closed",
    )  # fmt: skip
    idle_timeout_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="A connection with no complete request head this long after it opened or after its last "
        "answer is closed (idle keep-alive and slowly trickled heads alike)",
    )  # fmt: skip
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Time for a webhook body to arrive after its head; then 408"
    )
    tls_cert: Path | None = Field(
        default=None,
        description="Serve HTTPS with this certificate chain (PEM, leaf first); reloaded on SIGHUP. "
        "Default: plain HTTP (then a reverse proxy must terminate TLS: Okta and Graph deliver only to https://)",
    )
    tls_key: Path | None = Field(
        default=None, description="The certificate's private key (PEM, unencrypted, not readable by other users)"
    )

    @model_validator(mode="after")
    def _tls_together(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            raise ValueError(f"{given} is set without {missing}: set both (the certificate and its key) or neither")
        return self


class MetricsListen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class MetricsEndpoint(_Section):
    listen: MetricsListen | None = Field(
        default=None,
        description="Serve /metrics here, without a token, and not on the main listener; "
        "default (null): on the main listener, behind the admin token",
    )


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
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: FilePath | None = Field(
        default=None, description="The CA that signed the brokers' certificates (PEM); default: the system's CAs"
    )
    ssl_certfile: FilePath | None = Field(default=None, description="A client certificate (PEM), for brokers that ask")
    ssl_keyfile: FilePath | None = Field(default=None, description="The client certificate's key (PEM)")
    ssl_check_hostname: bool = Field(
        default=True,
        description="The broker's certificate must name the host connected to; the CA is verified regardless",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = Field(default=None, description="Event Hubs: `$ConnectionString`")

    @model_validator(mode="after")
    def _security_consistent(self) -> Self:
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        sasl = self.security_protocol.startswith("SASL_")
        if not tls and any(f is not None for f in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)):
            raise ValueError(
                f"ssl_* files are set but security_protocol is {self.security_protocol}: use SSL or SASL_SSL"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("set ssl_certfile and ssl_keyfile together (a client certificate needs its key)")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism and sasl_username")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism is set but security_protocol is {self.security_protocol}: use SASL_SSL")
        return self


class Ssf(_Section):
    issuer: str = Field(min_length=1, description="The transmitter's iss")
    audience: str = Field(min_length=1, description="This receiver's aud")
    jwks_file: Path | None = None
    jwks_url: str | None = Field(default=None, description="https://...; http only to a loopback address")
    jwks_refetch_interval_s: float = Field(
        default=60.0, gt=0, description="At most one JWKS fetch this often, however many unknown key ids arrive"
    )
    jwks_timeout_s: float = Field(default=5.0, gt=0, le=60, description="A JWKS fetch gives up after this")
    path: str = "/hooks/ssf"

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file and jwks_url")
        return self

    @field_validator("jwks_url")
    @classmethod
    def _https_or_loopback(cls, url: str | None) -> str | None:
        # The responder fetches this URL itself: plain http to another host (a cloud metadata address,
        # an internal service) would let whoever controls the path or the network hand it signing keys.
        if url is None:
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            address: IPv4Address | IPv6Address | None = ip_address(host)
        except ValueError:
            address = None
        loopback = host == "localhost" or (address is not None and address.is_loopback)
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError(f"jwks_url must be an https:// URL such as https://idp.example/jwks, not {url!r}")
        if parts.scheme == "http" and not loopback:
            raise ValueError(f"jwks_url must use https (plain http only to a loopback address, for tests): {url!r}")
        if address is not None and (address.is_link_local or address.is_unspecified or address.is_multicast):
            raise ValueError(f"jwks_url must not point at {address} (link-local, unspecified or multicast)")
        return url


class OktaSystemLog(_Section):
    """The Okta System Log poller: what hooks never deliver (ThreatInsight, impersonation, entity risk)."""

    org_url: str = Field(description="https://YOUR-ORG.okta.com; http only to a loopback address, for tests")
    interval_s: float = Field(default=5.0, gt=0, le=3600, description="Wait between polls once caught up")
    event_types: tuple[str, ...] = Field(
        default=(), description="Read besides the types the loaded rules match for source okta"
    )
    start: Literal["now"] | datetime = Field(
        default="now", description="Where to begin with no saved cursor: now (a few minutes back) or an ISO time"
    )
    page_limit: int = Field(default=1000, ge=1, le=1000, description="Events a page (Okta's maximum is 1000)")
    max_pages_per_poll: int = Field(default=20, ge=1, le=1000, description="Pages read at once before a pause")
    request_timeout_s: float = Field(default=30.0, gt=0, le=300)
    client_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="An OAuth service app (private_key_jwt, scope okta.logs.read) instead of an API token",
    )  # fmt: skip
    key_id: str | None = Field(default=None, max_length=128, description="The service app key's kid, if several")

    @field_validator("org_url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        # The API token goes with every request: never in clear over a network.
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            loopback = host == "localhost" or ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if parts.scheme not in ("https", "http") or not host or parts.path.strip("/") or parts.query:
            raise ValueError(f"org_url must be the org's base URL such as https://example.okta.com, not {url!r}")
        if parts.scheme == "http" and not loopback:
            raise ValueError(f"org_url must use https (plain http only to a loopback address, for tests): {url!r}")
        return url.rstrip("/")


class Okta(_Section):
    system_log: OktaSystemLog | None = None


class EntraSubscriptions(_Section):
    """Microsoft Graph change-notification subscriptions the service creates and keeps alive."""

    notification_url: str = Field(
        description="Where Graph delivers changes: this service's /hooks/entra, as Graph reaches it"
    )
    lifecycle_notification_url: str = Field(description="This service's /hooks/entra/lifecycle, as Graph reaches it")
    resources: tuple[Literal["users", "groups"], ...] = Field(default=("users",), min_length=1)
    lifetime_minutes: int = Field(
        default=41_760, ge=45, le=41_760, description="Asked of Graph for each subscription (its maximum for users)"
    )
    renew_below: float = Field(
        default=0.5, gt=0, lt=1, description="Renew when less than this fraction of the lifetime remains"
    )
    check_interval_s: float = Field(default=60.0, gt=0, description="How often expiries are looked at")

    @field_validator("notification_url", "lifecycle_notification_url")
    @classmethod
    def _https(cls, url: str) -> str:
        return _graph_url(url, "a notification URL")


class EntraRiskPolling(_Section):
    """Entra ID Protection read by polling Graph (for tenants without Event Hubs)."""

    interval_s: float = Field(default=60.0, gt=0, description="Time between two polls")
    first_lookback_s: float = Field(default=86_400.0, ge=0, description="How far back the very first poll reads")
    overlap_s: float = Field(
        default=3600.0, ge=0, description="Each poll reads this far behind its cursor: offline detections are backdated"
    )


class Entra(_Section):
    """App-only access to Microsoft Graph (client credentials): a secret (entra_client_secret[_file]) or a
    certificate registered on the app (client_certificate and client_key)."""

    tenant_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9.-]+$")
    client_id: str = Field(min_length=1, max_length=128)
    graph_url: str = "https://graph.microsoft.com/v1.0"
    login_url: str = "https://login.microsoftonline.com"
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Each Graph call gives up after this")
    client_certificate: FilePath | None = Field(
        default=None, description="The app's certificate (PEM), instead of a client secret"
    )
    client_key: FilePath | None = Field(
        default=None, description="Its private key (PEM, RSA, unencrypted, not readable by other users)"
    )
    subscriptions: EntraSubscriptions | None = None
    risk_polling: EntraRiskPolling | None = None

    @field_validator("graph_url", "login_url")
    @classmethod
    def _https(cls, url: str) -> str:
        return _graph_url(url, "a Graph or login URL")


def _entra_certificate(entra: Entra) -> None:
    """The certificate and key given together, and usable; ValueError naming the file otherwise."""
    if (entra.client_certificate is None) != (entra.client_key is None):
        raise ValueError("set entra.client_certificate and entra.client_key together (a certificate needs its key)")
    if entra.client_certificate is None or entra.client_key is None:
        return
    from responder.ingest.graph_client import ClientCertificate  # noqa: PLC0415 - see _graph_url

    try:
        ClientCertificate.load(entra.client_certificate.read_bytes(), entra.client_key.read_bytes())
    except OSError as exc:
        raise ValueError(f"entra.client_certificate / client_key: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"entra.client_certificate {entra.client_certificate}: {exc}") from None


def _graph_url(url: str, what: str) -> str:
    from responder.ingest.graph_client import check_url  # noqa: PLC0415 - keeps aiohttp out of config imports

    return check_url(url, what)


class Limits(_Section):
    actions_per_minute: int = Field(default=120, ge=1)
    actions_per_minute_per_rule: int = Field(default=30, ge=1)
    max_subjects: int = Field(
        default=1_000_000, ge=1000,
        description="Subjects the engine tracks at most (about 0.5 KB each); the last tenth only for high severity",
    )  # fmt: skip


class Retention(_Section):
    """How long the journal keeps what it holds; pruned by the service every `interval_s`."""

    events_margin_s: float = Field(
        default=86_400.0, ge=0,
        description="Processed events and their deliveries are kept for the longest rule window or TTL plus this",
    )  # fmt: skip
    decisions_days: float = Field(
        default=400.0, gt=0, description="Ended decisions, their intents and the audit trail are kept this long"
    )
    interval_s: float | None = Field(default=3600.0, gt=0, description="How often to prune; null turns it off")


class Enforcement(_Section):
    """How the hubs are driven, and how enforcement converges through hub outages."""

    operation_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        description="No answer in this time: the connection is reset (nothing queued runs later) and the hub read back",
    )  # fmt: skip
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120, description="TCP and SSH handshake to a hub")
    probe_interval_s: float = Field(
        default=1.0, gt=0, le=60,
        description="While a hub with actions outstanding does not answer, its SSH port is tried this often",
    )  # fmt: skip
    retry_min_s: float = Field(
        default=0.5, gt=0, description="First wait before trying again an action a hub answered but did not verify"
    )
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest wait between such tries (back-off, jitter)")

    @model_validator(mode="after")
    def _ordered(self) -> Enforcement:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self


class _NotifyChannel(_Section):
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="One delivery gives up after this")

    def _secret(self, name: str) -> None:
        """`NAME` or `NAME_file` (read here, stripped): a secret of this channel, never both, never empty."""
        path: Path | None = getattr(self, f"{name}_file")
        if path is None:
            return
        if getattr(self, name) is not None:
            raise ValueError(f"set {name} or {name}_file, not both")
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{name}_file {path}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"{name}_file {path} is empty")
        object.__setattr__(self, name, SecretStr(value))


class SlackWebhookChannel(_NotifyChannel):
    """A Slack incoming webhook; the URL is the secret (anyone holding it posts to the channel)."""

    type: Literal["slack_webhook"]
    url: SecretStr | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _url(self) -> Self:
        self._secret("url")
        if self.url is None:
            raise ValueError("set url or url_file (https://hooks.slack.com/services/...)")
        return self


class SlackBotChannel(_NotifyChannel):
    """`chat.postMessage` with a bot token (xoxb-...): messages with Approve/Reject/Undo buttons."""

    type: Literal["slack_bot"]
    channel: str = Field(min_length=1, max_length=80, description="The Slack channel id (C0123456789)")
    token: SecretStr | None = None
    token_file: Path | None = None
    api_url: str = Field(default="https://slack.com/api", description="http only to a loopback address, for tests")

    @model_validator(mode="after")
    def _token(self) -> Self:
        self._secret("token")
        if self.token is None:
            raise ValueError("set token or token_file (the bot token, xoxb-...)")
        _https_or_loopback_url(self.api_url, "api_url")
        return self


class TeamsChannel(_NotifyChannel):
    """A Teams workflow ("When a Teams webhook request is received"); its URL carries its signature."""

    type: Literal["teams"]
    url: SecretStr | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _url(self) -> Self:
        self._secret("url")
        if self.url is None:
            raise ValueError("set url or url_file (the workflow's HTTP POST URL)")
        return self


class WebhookChannel(_NotifyChannel):
    """Any receiver: a JSON body signed with HMAC-SHA256 over `TIMESTAMP.BODY` (README, Notifications)."""

    type: Literal["webhook"]
    url: str = Field(min_length=1, description="https://...; http only to a loopback address")
    secret: SecretStr | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _signing(self) -> Self:
        self._secret("secret")
        if self.secret is None or len(self.secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"set secret or secret_file: at least {MIN_SECRET_CHARS} characters")
        _https_or_loopback_url(self.url, "url")
        return self


class EmailChannel(_NotifyChannel):
    """SMTP with STARTTLS (required, unless the server is on a loopback address and `starttls: false`)."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    to: tuple[str, ...] = Field(min_length=1)
    starttls: bool = True
    ca_file: FilePath | None = Field(default=None, description="Trust this CA for the server (default: the system's)")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _transport(self) -> Self:
        self._secret("password")
        if not self.starttls and not _loopback(self.host):
            raise ValueError(f"starttls: false is only for a server on a loopback address, not {self.host}")
        if (self.password is None) != (self.username is None):
            raise ValueError("set username and password (or password_file) together, or neither")
        return self


NotifyChannel = SlackWebhookChannel | SlackBotChannel | TeamsChannel | WebhookChannel | EmailChannel


class NotifyRoute(_Section):
    """Which notices go where: every field given must match (an empty list matches anything)."""

    kinds: tuple[str, ...] = Field(default=(), description="decided, enforced, awaiting_approval, ...")
    responses: tuple[str, ...] = Field(default=(), description="cut-off, quarantine, offboard, ...")
    states: tuple[str, ...] = Field(default=(), description="The decision's state: active, awaiting_approval, ...")
    subjects: tuple[str, ...] = Field(default=(), description="Glob patterns: user:*@example.com, peer:admin*")
    channels: tuple[str, ...] = Field(min_length=1)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        from responder.notify.notice import NoticeKind  # noqa: PLC0415 - the config module loads first

        known = {k.value for k in NoticeKind}
        for kind in kinds:
            if kind not in known:
                raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(sorted(known))}")
        return kinds


class Notify(_Section):
    channels: dict[str, Annotated[NotifyChannel, Field(discriminator="type")]] = Field(default_factory=dict)
    routes: tuple[NotifyRoute, ...] = ()
    rate_per_minute: float = Field(default=20.0, gt=0, description="Messages a channel sends a minute, on average")
    burst: int = Field(default=10, ge=1, description="Messages a channel may send at once before the rate applies")
    dedup_window_s: float = Field(default=300.0, ge=0, description="The same notice of a decision is sent once in it")
    max_attempts: int = Field(default=8, ge=1, le=100, description="Tries of one message before it is given up")
    retry_min_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    console_url: str | None = Field(
        default=None, description="https://responder.example.com: messages link the decision's subject page there"
    )

    @model_validator(mode="after")
    def _routes_name_channels(self) -> Self:
        for n, route in enumerate(self.routes):
            unknown = sorted(set(route.channels) - set(self.channels))
            if unknown:
                raise ValueError(f"routes[{n}] names channel {unknown[0]!r}, which notify.channels does not define")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _https_or_loopback_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname or "")):
        return
    raise ValueError(f"{what} must be https:// (http only to a loopback address), not {url!r}")


class OperatorsOidc(_Section):
    """Operators' bearer tokens from the organisation's IdP (Okta, Entra ID): who they are and their role."""

    issuer: str = Field(
        min_length=1,
        description="The tokens' iss: https://ORG.okta.com/oauth2/default, https://login.microsoftonline.com/TENANT/v2.0",
    )
    audience: str = Field(min_length=1, description="The tokens' aud: api://default (Okta), the app id (Entra)")
    jwks_url: str | None = Field(
        default=None,
        description="The IdP's signing keys; default: jwks_uri from ISSUER/.well-known/openid-configuration",
    )
    id_claim: str = Field(
        default="email", min_length=1, description="The operator's id; then preferred_username, upn, sub"
    )
    role_claim: str = Field(default="roles", min_length=1, description="roles (Entra app roles) or groups (Okta)")
    roles: dict[Literal["admin", "approver", "viewer"], list[str]] = Field(
        default_factory=dict,
        description="Claim values (groups, app roles) that grant each role; empty: the values admin, approver, viewer",
    )
    algorithms: tuple[Literal["RS256", "ES256"], ...] = Field(default=("RS256", "ES256"), min_length=1)
    leeway_s: float = Field(default=60.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat")
    jwks_refetch_interval_s: float = Field(default=60.0, gt=0)
    jwks_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _fetchable(cls, url: str | None, info: ValidationInfo) -> str | None:
        # The responder fetches the discovery document and the keys itself: the same rule as the SSF keys
        # (https, or http to loopback for tests; no link-local metadata addresses).
        try:
            return Ssf._https_or_loopback(url)
        except ValueError as exc:
            raise ValueError(str(exc).replace("jwks_url", info.field_name or "url", 1)) from None


class OperatorSettings(_Section):
    """Who may use the admin API and the console: OIDC bearer tokens, API tokens, the bootstrap token."""

    oidc: OperatorsOidc | None = None
    tokens_file: Path | None = Field(
        default=None, description="API tokens (SHA-256 hashes only), kept by `responder operators token`"
    )
    bootstrap_token: bool = Field(
        default=True, description="Accept the shared admin_token (an admin, bootstrap-admin); false once OIDC works"
    )


class SlackChat(_Section):
    """Slack's interactive buttons (POST /hooks/slack/interactions), verified with `slack_signing_secret`."""

    users: dict[str, str] = Field(
        default={}, description="Slack user id (U0123ABCD) -> operator id, whose role `chat.people` gives"
    )
    team_id: str | None = Field(
        default=None, pattern=r"^[A-Z0-9]{1,32}$", description="Only this workspace's users (T0123ABCD); unset: any"
    )
    response_url_prefix: str = Field(
        default="https://hooks.slack.com/",
        description="Outcomes are posted only to a response_url under this prefix (never where a payload says)",
    )


class Chat(_Section):
    """Approvals from chat: who in a chat is which operator, and what they may do."""

    people: dict[str, str] = Field(
        default={}, description="operator id -> role (viewer, approver, admin) for approvals from chat and links"
    )
    slack: SlackChat | None = None
    link_base_url: str | None = Field(
        default=None, description="The service's URL as operators reach it, for signed approval links (/links/...)"
    )
    link_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400, description="How long an approval link works")

    @field_validator("link_base_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).hostname):
            raise ValueError(f"link_base_url must be the service's URL (https://responder.example.com), not {url!r}")
        return url

    @field_validator("people")
    @classmethod
    def _roles(cls, people: dict[str, str]) -> dict[str, str]:
        from responder.service.operators import Role  # noqa: PLC0415 - keeps aiohttp out of config imports

        for operator, role in people.items():
            try:
                Role.parse(role)
            except ValueError as exc:
                raise ValueError(f"chat.people.{operator}: {exc}") from None
        return people


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
    okta: Okta | None = None
    entra: Entra | None = None
    metrics: MetricsEndpoint = MetricsEndpoint()
    dry_run: bool = False
    instance: str | None = Field(
        default=None,
        description="This instance's name, stable across restarts (default: the host name); it owns its events",
    )
    limits: Limits = Limits()
    notify: Notify = Notify()
    retention: Retention = Retention()
    max_clock_skew_s: float = Field(
        default=MAX_CLOCK_SKEW.total_seconds(), ge=0,
        description="How far ahead of its receipt an event's time may lie; a later one counts as received then",
    )  # fmt: skip
    enforcement: Enforcement = Enforcement()
    operators: OperatorSettings = OperatorSettings()
    chat: Chat | None = None
    reconcile_interval_s: float = Field(
        default=30.0, gt=0, description="How often every hub is read back and what is in force re-asserted"
    )
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
    okta_api_token: SecretStr | None = None
    okta_api_token_file: Path | None = None
    okta_private_key: SecretStr | None = None  # PEM: the Okta service app's private_key_jwt key
    okta_private_key_file: Path | None = None
    entra_client_secret: SecretStr | None = None
    entra_client_secret_file: Path | None = None
    slack_signing_secret: SecretStr | None = None  # the Slack app's signing secret (Basic Information)
    slack_signing_secret_file: Path | None = None
    link_key: SecretStr | None = None  # signs approval links; at least 32 bytes
    link_key_file: Path | None = None

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        origin: dict[str, str] = {}
        for name in SECRETS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is not None and not self.model_config.get("defer_secret_files"):
                if getattr(self, name) is not None:
                    raise ValueError(f"set {name} or {name}_file, not both")
                try:
                    value = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(f"{name}_file {path}: {exc.strerror}") from None
                if not value:
                    raise ValueError(f"{name}_file {path} is empty")
                object.__setattr__(self, name, SecretStr(value))
                origin[name] = f" (read from {path})"
        if (
            self.kafka is not None
            and self.kafka.sasl_mechanism is not None
            and self.kafka_password is None
            and self.kafka_password_file is None
        ):
            raise ValueError("kafka.sasl_mechanism is set: set kafka_password or kafka_password_file")
        self._okta_credentials()
        self._chat_secrets()
        for name in AUTHENTICATING_SECRETS:
            secret: SecretStr | None = getattr(self, name)
            if secret is not None and len(secret.get_secret_value().strip()) < MIN_SECRET_CHARS:
                # Never the value itself; only that it is too short, and what to do instead.
                given = "empty" if not secret.get_secret_value().strip() else "too short"
                raise ValueError(
                    f"{name}{origin.get(name, '')} is {given}: set at least {MIN_SECRET_CHARS} characters "
                    f"(e.g. `openssl rand -hex 32`), or leave it unset to turn off what it guards"
                )
        return self

    def _chat_secrets(self) -> None:
        # With `defer_secret_files` (config check) a file is named but not read: it counts as given.
        deferred = bool(self.model_config.get("defer_secret_files"))
        slack_secret = self.slack_signing_secret is not None or (
            deferred and self.slack_signing_secret_file is not None
        )
        link_key = self.link_key is not None or (deferred and self.link_key_file is not None)
        if self.chat is not None and self.chat.slack is not None and not slack_secret:
            raise ValueError("chat.slack is set: set slack_signing_secret or slack_signing_secret_file")
        if self.chat is not None and self.chat.link_base_url is not None and not link_key:
            raise ValueError("chat.link_base_url is set: set link_key or link_key_file (32 bytes or more)")
        if self.link_key is not None and len(self.link_key.get_secret_value().encode()) < MIN_LINK_KEY_BYTES:
            raise ValueError("link_key is too short: set at least 32 bytes (e.g. `openssl rand -hex 32`)")

    def _okta_credentials(self) -> None:
        system_log = self.okta.system_log if self.okta is not None else None
        if system_log is None:
            return
        # With `defer_secret_files` (config check) a file is named but not read: it counts as given.
        token = self.okta_api_token is not None or self.okta_api_token_file is not None
        key = self.okta_private_key is not None or self.okta_private_key_file is not None
        app = system_log.client_id is not None
        if app and not key:
            raise ValueError("okta.system_log.client_id is set: set okta_private_key or okta_private_key_file (PEM)")
        if app and token:
            raise ValueError("okta.system_log: use an API token or a service app (client_id), not both")
        if not app and not token:
            raise ValueError(
                "okta.system_log is set: set okta_api_token or okta_api_token_file (SSWS API token), "
                "or okta.system_log.client_id and okta_private_key_file (service app)"
            )
        if self.okta_api_token is not None and len(self.okta_api_token.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError("okta_api_token is too short: an Okta API token is 42 characters, copy it whole")
        if self.okta_private_key is not None:
            # Only when a key is set: the module brings aiohttp and jwt, which `responder` commands need not load.
            from responder.ingest.okta_auth import check_private_key  # noqa: PLC0415

            try:
                check_private_key(self.okta_private_key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"okta_private_key {exc}") from None

    @model_validator(mode="after")
    def _entra_credentials(self) -> Self:
        """After the secrets are read from their files: the Graph pull sources have one way to get a token."""
        if self.entra is not None and (self.entra.subscriptions or self.entra.risk_polling):
            _entra_certificate(self.entra)
            secret_given = self.entra_client_secret is not None or self.entra_client_secret_file is not None
            if self.entra.client_certificate is not None and secret_given:
                raise ValueError("set entra_client_secret or entra.client_certificate, not both")
            if self.entra.client_certificate is None and not secret_given:
                raise ValueError(
                    "entra is set: set entra_client_secret or entra_client_secret_file "
                    "(or entra.client_certificate and entra.client_key)"
                )
            if (
                self.entra_client_secret is not None
                and len(self.entra_client_secret.get_secret_value().strip()) < MIN_SECRET_CHARS
            ):
                raise ValueError(
                    "entra_client_secret is too short to be an Entra "
                    f"client secret (at least {MIN_SECRET_CHARS} characters)"
                )
            if self.entra.subscriptions is not None and self.entra_client_state is None:
                raise ValueError(
                    "entra.subscriptions needs entra_client_state: Graph sends it back with each notification"
                )
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


class ConfigError(ValueError):
    """Settings that cannot be used: one problem a line, each saying where (`FILE:LINE:COL:` when it is
    in the configuration file) and what to change."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def load_settings(config: Path | None = None, *, defer_secret_files: bool = False, **overrides: Any) -> Settings:
    """Settings from `config` (YAML), the environment and `overrides` (command-line options).
    Raises FileNotFoundError for a missing file and ConfigError for anything else wrong.
    `defer_secret_files`: the `*_file` secrets are left unread (their values None), for a caller that checks
    each file itself and reports every one (`responder config check`) instead of stopping at the first."""
    cls: type[Settings] = Settings
    config_dict = dict(Settings.model_config)
    if defer_secret_files:
        config_dict["defer_secret_files"] = True
    if config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file {config} does not exist")
        _check_yaml(config)
        # A subclass per file: pydantic-settings reads the YAML path from the class's model_config.
        config_dict["yaml_file"] = config
    if config_dict != Settings.model_config:
        cls = cast("type[Settings]", type("Settings", (Settings,), {"model_config": config_dict}))
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, config)) from None


def _check_yaml(config: Path) -> None:
    """The file is YAML and a mapping, or a ConfigError that says where it is not."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{config}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{config}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([f"{config}:{line}:{column}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{config}: invalid YAML: {exc}"]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"{config}:1:1: expected a mapping of settings, got a {type(data).__name__}"])


def _problems(exc: ValidationError, config: Path | None) -> list[str]:
    """One line per error; those whose field is in the file say its line and column."""
    positions: dict[Any, tuple[int, int]] = {}
    if config is not None:
        # Only on this error path: the positions reader comes with the rule loader, slow to import.
        from responder.policy.yamlpos import YamlError, load_with_positions, position  # noqa: PLC0415

        try:
            _, positions = load_with_positions(config.read_text(encoding="utf-8"), str(config))
        except (OSError, YamlError):
            positions = {}
    out: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(map(str, loc))
        if loc and loc[:1] in positions:
            line, column = position(positions, loc)
            out.append(f"{config}:{line}:{column}: {field}: {message}")
        else:
            out.append(f"{field}: {message}" if field else message)
    return out
