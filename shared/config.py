"""One settings object, read from environment variables.

Every configuration variable gridbus understands is declared here, once, with its
default for a developer's machine (RabbitMQ and Redis on localhost). The README's
configuration table is generated from this class (`gridbus config`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, JsonValue, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = REPO_ROOT / "config"

#: a field's marks (json_schema_extra): `secret` may come from the file named by
#: `<VARIABLE>_FILE` (Docker/Kubernetes secrets) and is never printed; `channel` settings
#: are the notification channels' (README's second table)
SECRET: dict[str, JsonValue] = {"secret": True}
CHANNEL: dict[str, JsonValue] = {"channel": True}
CHANNEL_SECRET: dict[str, JsonValue] = {**SECRET, **CHANNEL}


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable of a setting: its alias where it has one, else its name."""
    alias = field.validation_alias
    return alias.upper() if isinstance(alias, str) else name.upper()


def marked(field: FieldInfo, mark: str) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(mark))


def read_secret_file(path: str) -> str:
    # Docker/Kubernetes secret files end with a newline that is not part of the secret.
    return Path(path).read_text(encoding="utf-8").strip()


def named_secret(name: str) -> str | None:
    """A secret whose variable name carries a code (`GRIDBUS_SECRET_<WHO>`,
    `GRIDBUS_DEPT_PASSWORD_<DEPT>`): such names cannot be fields, so they are read here, the
    one place that reads them — the variable, else the file named by `<name>_FILE`, else None."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    return read_secret_file(path) if path else None


class _SecretFiles(PydanticBaseSettingsSource):
    """`<VARIABLE>_FILE` for every secret setting, below the variable itself."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            path = os.environ.get(variable(name, field) + "_FILE") if marked(field, "secret") else None
            if path:
                out[name] = read_secret_file(path)
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    amqp_uri: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ connection URI (vhost at the end, `/` is `%2F`).",
    )
    rabbitmq_management_url: str = Field(
        "http://guest:guest@127.0.0.1:15672",
        description="RabbitMQ management HTTP API, used by `gridbus topology apply` for users and vhosts.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis connection URL.")
    redis_sentinels: str = Field(
        "", description="Comma-separated `host:port` of Redis Sentinels; when set, used instead of REDIS_URL."
    )
    redis_socket_timeout_seconds: float = Field(
        10.0,
        description="A Redis command that gets no answer this long fails (a hung Redis is then an outage "
        "like a dead one: consumers hold their messages, /healthz says redis).",
    )
    redis_sentinel_master: str = Field("gridbus", description="Name of the master the Sentinels watch.")
    redis_key_prefix: str = Field(
        "gridbus", description="Prefix of every Redis key, so several stacks can share one Redis."
    )
    database_url: str = Field(
        "postgresql://root@127.0.0.1:5432/gridbus",
        description="PostgreSQL DSN of the archive (the durable record and reporting store, docs/design.md §11).",
    )
    case_hot_days: int = Field(
        30, description="Days a closed (or cancelled, duplicate) case stays in Redis before only the archive serves it."
    )
    config_dir: Path = Field(
        DEFAULT_CONFIG_DIR,
        description="Folder holding routes.yaml, sla.yaml, departments.yaml, grid.yaml, notify.yaml.",
    )
    district_code: str = Field("450305", description="6-digit code of the district this stack serves.")
    timezone: str = Field("Asia/Shanghai", description="Local time zone of the district.")

    log_format: str = Field("console", description="`console` for humans, `json` in production.")
    log_level: str = Field("INFO", description="Python log level name.")

    intake_http_host: str = Field("127.0.0.1", description="Address intake's HTTP API binds to.")
    intake_http_port: int = Field(8000, description="Port of intake's HTTP API.")
    max_report_bytes: int = Field(65536, description="Largest accepted request body, chunked or not (HTTP 413 above).")
    http_read_timeout_seconds: float = Field(
        10.0, description="Longest intake waits for a request's headers or its whole body (HTTP 408 after)."
    )
    intake_http_workers: int = Field(
        10,
        description="nameko workers intake's HTTP requests may hold at once; the AMQP consumers keep "
        "20 more of their own (a request's body is read before it takes one).",
    )
    rate_limit_grid_app: str = Field(
        "50/200", description="Requests per second / burst allowed per grid_app key (HTTP 429 above; 0: no limit)."
    )
    rate_limit_department: str = Field("20/100", description="Requests per second / burst allowed per department key.")
    rate_limit_ops: str = Field("50/200", description="Requests per second / burst allowed per ops key.")
    rate_limit_open311: str = Field("5/30", description="Requests per second / burst allowed per open311 key.")
    rate_limit_station: str = Field("20/100", description="Requests per second / burst allowed per station key.")
    rate_limit_city: str = Field(
        "10/50", description="Requests per second / burst allowed per city key (the city platform's task hand-over)."
    )

    intake_metrics_port: int = Field(9101, description="Prometheus /metrics port of intake.")
    router_metrics_port: int = Field(9102, description="Prometheus /metrics port of router.")
    sla_metrics_port: int = Field(9103, description="Prometheus /metrics port of sla.")
    notifier_metrics_port: int = Field(9104, description="Prometheus /metrics port of notifier.")
    archiver_metrics_port: int = Field(9105, description="Prometheus /metrics port of archiver.")
    archiver_batch_messages: int = Field(
        500,
        ge=1,
        description="The archiver writes the record from the `gridbus.audit` stream in batches of at most this "
        "many messages per PostgreSQL transaction (with the stream offset reached); its prefetch is twice this.",
    )
    archiver_batch_ms: int = Field(
        200,
        ge=1,
        description="…or whatever arrived within this many milliseconds of a batch's first message, whichever "
        "comes first: the longest a recorded message waits to be written while the stream is quiet.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics servers bind to.")

    max_rejections: int = Field(
        2, description="After this many departments said 'not ours', a case goes to the grid station as 争议件."
    )
    onsite_verify_sample_rate: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Share of cases handled on site (就地处置) drawn for the grid's verification; the others "
        "are closed at once as not drawn. 1 verifies every one like any other case.",
    )
    evaluation_reopen_hours: float = Field(
        168.0, ge=0.0, description="A dissatisfied evaluation this long after the closing still reopens the case."
    )
    grade_weights: str = Field(
        "on_time=0.4,closed=0.24,no_rework=0.16,satisfaction=0.2",
        description="Weights of the grade score's terms (shared/indicators.py); a term without data "
        "(no evaluations) drops out and the others are scaled up.",
    )
    grade_escalation_penalty: float = Field(
        10.0, ge=0.0, description="Points off the grade score per unit of escalation rate."
    )
    satisfaction_basic_credit: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="How much a 'basically satisfied' evaluation counts towards the "
        "satisfaction rate (satisfied counts 1, dissatisfied 0).",
    )
    meeting_hotspot_min: int = Field(
        3,
        ge=2,
        description="Joint-meeting agenda: the same category in the same patch this many times in the "
        "period is a recurring hot spot.",
    )
    meeting_merchant_min: int = Field(
        2,
        ge=2,
        description="Joint-meeting agenda: a merchant (report attribute merchant_id) with this many "
        "reports in the period is a 门前三包 repeat offender.",
    )
    bridge_http_url: str = Field(
        "", description="City-platform bridge: POST every case event as a CloudEvent (structured JSON) here."
    )
    bridge_amqp_exchange: str = Field(
        "",
        description="City-platform bridge: publish every case event as a CloudEvent to this topic exchange "
        "(routing key = the event type) on BRIDGE_AMQP_URI.",
    )
    bridge_amqp_uri: str = Field("", description="Broker of BRIDGE_AMQP_EXCHANGE (default AMQP_URI).")
    bridge_source: str = Field(
        "", description="CloudEvents `source` of outbound events (default `urn:gridbus:<DISTRICT_CODE>`)."
    )
    bridge_type_prefix: str = Field("cn.gridbus.", description="Prefix of outbound CloudEvent types.")
    bridge_http_tries: int = Field(
        3, ge=1, description="HTTP attempts per event before the bridge holds it and retries with back-off."
    )
    bridge_timeout_seconds: float = Field(5.0, description="HTTP timeout of one bridge delivery attempt.")
    bridge_metrics_port: int = Field(9106, description="Prometheus /metrics port of the bridge.")
    outbox_relay_seconds: float = Field(
        2.0, description="How often intake re-publishes events stored but not yet confirmed."
    )
    outbox_relay_after_seconds: float = Field(
        5.0,
        gt=0.0,
        description="How old an event stored but not yet confirmed must be before intake's or sla's relay "
        "publishes it again: above a slow request's own publish, so that a busy machine does not send each "
        "event twice.",
    )
    sla_tick_seconds: float = Field(0.2, description="How often sla looks for due timers.")
    sla_fire_ahead_seconds: float = Field(
        2.0,
        ge=0.0,
        description="sla claims the timers falling due within this many seconds and decides them ahead, "
        "so that at the due time only the commit is left (a burst due at once fires on time); 0 turns it off.",
    )
    sla_lease_seconds: float = Field(
        30.0, description="How long a claimed timer may stay unpublished before it is re-armed."
    )
    consumer_retry_max_seconds: float = Field(
        5.0,
        description="Longest pause between two tries of a message held while a dependency (Redis, the "
        "broker) is down; held messages are tried again, never requeued, until it is back.",
    )
    consumer_stuck_seconds: float = Field(
        300.0,  # above the longest try of a handler (two confirm publishes: 2 × (30 s connect + 30 s confirm))
        description="A message a consumer took and has not tried for this long (a hung handler, a retry "
        "that never woke) fails /healthz (`messages`) and ends the process, so that the broker hands it "
        "out again; a message held this long fails /healthz (`held`) until it goes through.",
    )
    consumer_reattach_seconds: float = Field(
        120.0,
        description="A service whose consumers stay detached from the broker this long exits non-zero "
        "(its supervisor restarts it).",
    )
    reconcile_seconds: float = Field(
        60.0,
        description="How often intake and sla look for disagreements left by a fault and repair them "
        "(cases stuck in `registered`, orders of cases being handled without clocks).",
    )
    reconcile_after_seconds: float = Field(
        60.0,
        description="A case is repaired only once it has been stuck this long (normal flow takes well under a second).",
    )
    reconcile_window_seconds: float = Field(
        86400.0,
        description="The reconcilers look at open cases registered within this many seconds.",
    )
    sla_tick_stale_seconds: float = Field(
        30.0,
        description="sla's /healthz fails, and the process exits, when its tick loop has not run for this long.",
    )
    notifier_timeout_seconds: float = Field(5.0, description="HTTP timeout of one delivery attempt.")
    webhook_secret: str = Field(
        "change-me",
        json_schema_extra=SECRET,
        repr=False,
        description="Default HMAC secret of webhooks (department ones: GRIDBUS_SECRET_<DEPT> overrides it).",
    )
    gridbus_api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias="GRIDBUS_API_KEY",
        json_schema_extra=SECRET,
        description="The API key `gridbus demo` reports with. Empty: it creates a grid_app key once (kept in Redis).",
    )
    webhook_url_template: str = Field(
        "",
        description="If set, every department's webhook URL is this with `{dept}` filled in "
        "(handy for a single local sink); otherwise departments.yaml gives the URL.",
    )
    public_base_url: str = Field("http://127.0.0.1:8000", description="Base URL used in links inside notifications.")
    grid_app_webhook_url: str = Field(
        "",
        description="Webhook of the grid app: reporters get status updates (resolved/closed/reopened) "
        "there, signed with GRIDBUS_SECRET_GRIDAPP or WEBHOOK_SECRET. Empty: reporters are not told.",
    )
    notifier_send_lease_seconds: float = Field(
        30.0,
        description="How long one notifier replica owns a delivery while sending it; after a crash the "
        "one resend waits for this lease to run out (keep above NOTIFIER_TIMEOUT_SECONDS).",
    )
    notifier_flush_seconds: float = Field(
        1.0, description="How often the notifier looks for held messages (quiet hours, rate limit) due as a digest."
    )
    notifier_queue_poll_seconds: float = Field(
        15.0, description="How often the notifier reads the depth of its work, retry and dead-letter queues."
    )

    # -- notification channels (services/notifier/channels/); robots' URLs and secrets are
    # in config/notify.yaml as ${VARIABLE} references
    smtp_host: str = Field(
        "",
        validation_alias="GRIDBUS_SMTP_HOST",
        json_schema_extra=CHANNEL,
        description="Mail relay. Empty: the email channel is disabled (deliveries fall back "
        "to the next channel or count as no_address).",
    )
    smtp_port: int = Field(
        25, validation_alias="GRIDBUS_SMTP_PORT", json_schema_extra=CHANNEL, description="Port of the mail relay."
    )
    smtp_starttls: bool = Field(
        False,
        validation_alias="GRIDBUS_SMTP_STARTTLS",
        json_schema_extra=CHANNEL,
        description="STARTTLS after connecting.",
    )
    smtp_ssl: bool = Field(
        False,
        validation_alias="GRIDBUS_SMTP_SSL",
        json_schema_extra=CHANNEL,
        description="Implicit TLS (port 465) instead of STARTTLS.",
    )
    smtp_ca_file: str = Field(
        "",
        validation_alias="GRIDBUS_SMTP_CA_FILE",
        json_schema_extra=CHANNEL,
        description="Extra CA bundle to trust (a private relay); empty: the system store.",
    )
    smtp_user: str = Field(
        "", validation_alias="GRIDBUS_SMTP_USER", json_schema_extra=CHANNEL, description="SMTP login; empty: none."
    )
    smtp_password: SecretStr = Field(
        SecretStr(""),
        validation_alias="GRIDBUS_SMTP_PASSWORD",
        json_schema_extra=CHANNEL_SECRET,
        description="SMTP password (never logged).",
    )
    mail_from: str = Field(
        "gridbus@localhost",
        validation_alias="GRIDBUS_MAIL_FROM",
        json_schema_extra=CHANNEL,
        description="Sender of notification e-mails.",
    )
    sms_url: str = Field(
        "",
        validation_alias="GRIDBUS_SMS_URL",
        json_schema_extra=CHANNEL,
        description="SMS provider endpoint. Empty: the sms channel is disabled (deliveries fall "
        "back to the next channel or count as no_address).",
    )
    sms_api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias="GRIDBUS_SMS_API_KEY",
        json_schema_extra=CHANNEL_SECRET,
        description="SMS provider API key (never logged).",
    )
    sms_sign: str = Field(
        "七星城管",
        validation_alias="GRIDBUS_SMS_SIGN",
        json_schema_extra=CHANNEL,
        description="Signature (签名) the SMS provider puts on each message.",
    )

    def webhook_secret_of(self, who: str) -> str:
        """The HMAC secret of one webhook: `GRIDBUS_SECRET_<WHO>` (a department code, GRIDAPP
        or OPS; or the file named by `…_FILE`), else WEBHOOK_SECRET (`named_secret`)."""
        secret = named_secret(f"GRIDBUS_SECRET_{who.upper()}")
        return self.webhook_secret if secret is None else secret

    def rate_limit(self, role: str) -> str:
        return str(getattr(self, f"rate_limit_{role}"))

    @property
    def bridge_enabled(self) -> bool:
        """The bridge runs (and its queues exist) only when it has somewhere to deliver."""
        return bool(self.bridge_http_url or self.bridge_amqp_exchange)

    def metrics_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_metrics_port"))

    def nameko_config(self) -> dict:
        return {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": f"{self.intake_http_host}:{self.intake_http_port}",
            "serializer": "json",
            # city-platform tasks arrive as structured CloudEvents (services/bridge): JSON too
            "SERIALIZERS": {
                "cloudevents": {
                    "encoder": "json.dumps",
                    "decoder": "json.loads",
                    "content_type": "application/cloudevents+json",
                    "content_encoding": "utf-8",
                }
            },
            "ACCEPT": ["json", "cloudevents"],
            # the AMQP consumers' 20 plus intake's HTTP share (services/intake/boundary.py)
            "max_workers": 20 + self.intake_http_workers,
            "PREFETCH_COUNT": 20,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
