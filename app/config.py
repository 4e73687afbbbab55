"""Settings read from the environment (names per the contract, upper-case).

A bad value stops start-up with one line naming the variable: see `load_settings`.
"""

from __future__ import annotations

import sys
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(Exception):
    """A setting has a value the service cannot run with."""


def _parse_db_url(raw: str) -> tuple[str, int, str, str | None, str | None]:
    """Accept jdbc:postgresql://, postgresql://, postgres:// and postgresql+asyncpg:// URLs.

    Returns (host, port, database, user, password) or raises ValueError.
    """
    url = raw.strip()
    if url.startswith("jdbc:"):
        url = url[len("jdbc:") :]
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("expected jdbc:postgresql://host:port/db, postgresql://… or postgresql+asyncpg://…")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ValueError("port is not a number") from None
    host = parts.hostname
    database = unquote(parts.path.lstrip("/"))
    if not host:
        raise ValueError("no host in the URL")
    if not database or "/" in database:
        raise ValueError("no database name in the URL")
    query = parse_qs(parts.query)
    user = unquote(parts.username) if parts.username else next(iter(query.get("user", [])), None)
    password = unquote(parts.password) if parts.password else next(iter(query.get("password", [])), None)
    return host, port, database, user, password


class Settings(BaseSettings):
    """Every setting of the service; the environment variable is the upper-cased field name."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # HTTP
    host: str = "0.0.0.0"
    port: int = Field(8085, ge=1, le=65535)

    # PostgreSQL
    db_url: str = "jdbc:postgresql://localhost:5432/payments"
    db_username: str | None = None
    db_password: SecretStr | None = None
    db_pool_size: int = Field(10, ge=1, le=200)

    # RabbitMQ
    rabbitmq_host: str = "localhost"
    rabbitmq_port: int = Field(5672, ge=1, le=65535)
    rabbitmq_username: str = "guest"
    rabbitmq_password: SecretStr = SecretStr("guest")
    rabbitmq_vhost: str = "/"
    rabbitmq_consume_queue: str = Field("payment.stock-confirmed", min_length=1, max_length=200)
    rabbitmq_publish_exchange: str = Field("foodies", min_length=1, max_length=255)
    rabbitmq_cancel_queue: str = Field("payment.order-cancelled", min_length=1, max_length=200)
    consumer_concurrency: int = Field(16, ge=1, le=1000)
    # Larger consumed messages are parked unread (reason `too_large`).
    max_event_bytes: int = Field(262_144, ge=1024, le=16 * 1024 * 1024)

    # Payment gateway: the in-process simulator (default) or a Stripe-style HTTP API
    payment_gateway: Literal["simulated", "http"] = "simulated"
    payment_gateway_url: str | None = None
    payment_gateway_api_key: SecretStr | None = None
    # Circuit breaker: how long it stays open before a trial charge, and the oldest order
    # (by its occurredAt) still held for the gateway. Held messages stay unacknowledged, so
    # the wait must stay well below RabbitMQ's consumer_timeout (30 min by default).
    payment_circuit_open_seconds: float = Field(10.0, gt=0, le=600)
    payment_max_wait_seconds: float = Field(900.0, gt=0, le=1500)
    payment_always_succeed: bool = False
    payment_delay_ms: int = Field(100, ge=0, le=600_000)
    payment_gateway_timeout_ms: int = Field(5000, ge=1, le=600_000)
    payment_retry_max_attempts: int = Field(3, ge=1, le=20)
    payment_retry_base_delay_ms: int = Field(200, ge=0, le=600_000)
    payment_retry_max_delay_ms: int = Field(5000, ge=0, le=600_000)

    # Crash safety
    payment_lease_seconds: float = Field(30.0, gt=0, le=3600)
    reconcile_interval_seconds: float = Field(5.0, gt=0, le=3600)
    shutdown_grace_seconds: float = Field(20.0, ge=0, le=3600)

    # Operations
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    admin_token: SecretStr | None = None
    # Requests per second per client on /payments* and /admin* (burst: twice that).
    admin_rate_limit: float = Field(20.0, gt=0, le=100_000)
    # OpenID Connect (Keycloak) access tokens for the admin API; see README "Admin API".
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_jwks_url: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    # Unset: gRPC when the endpoint's port is 4317 (as Foodies runs it), else http/protobuf.
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] | None = None
    otel_service_name: str = "payment-service"

    # Test-only crash injection (see README "Delivery guarantees"); never set in production.
    payment_fault_inject: str | None = None

    @field_validator("log_level", "log_format", "payment_gateway", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("payment_fault_inject")
    @classmethod
    def _fault_point_known(cls, value: str | None) -> str | None:
        from app.faults import FaultInjector

        FaultInjector(value)  # raises ValueError naming the known points
        return value

    @field_validator("db_url")
    @classmethod
    def _db_url_parses(cls, value: str) -> str:
        _parse_db_url(value)
        return value

    @field_validator(
        "admin_token",
        "db_password",
        "db_username",
        "otel_exporter_otlp_endpoint",
        "auth_issuer",
        "auth_audience",
        "auth_jwks_url",
        "payment_gateway_url",
        "payment_gateway_api_key",
        "otel_exporter_otlp_protocol",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_issuer", "auth_jwks_url", "otel_exporter_otlp_endpoint", "payment_gateway_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if value is not None and not urlsplit(value).hostname:
            raise ValueError("no host in the URL")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        if bool(self.auth_issuer) != bool(self.auth_audience):
            raise ValueError("AUTH_ISSUER and AUTH_AUDIENCE must be set together")
        if self.auth_jwks_url and not self.auth_issuer:
            raise ValueError("AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE")
        return self

    @model_validator(mode="after")
    def _check_gateway(self) -> Settings:
        if self.payment_gateway == "http" and not self.payment_gateway_url:
            raise ValueError("PAYMENT_GATEWAY_URL is required with PAYMENT_GATEWAY=http")
        if self.rabbitmq_cancel_queue == self.rabbitmq_consume_queue:
            raise ValueError("RABBITMQ_CANCEL_QUEUE must differ from RABBITMQ_CONSUME_QUEUE")
        return self

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        if self.payment_retry_max_delay_ms < self.payment_retry_base_delay_ms:
            raise ValueError("PAYMENT_RETRY_MAX_DELAY_MS must not be below PAYMENT_RETRY_BASE_DELAY_MS")
        if self.payment_lease_seconds <= self.worst_case_charge_seconds:
            raise ValueError(
                f"PAYMENT_LEASE_SECONDS must exceed the longest possible charge "
                f"({self.worst_case_charge_seconds:.1f} s with the current timeout and retry settings)"
            )
        return self

    # ----------------------------------------------------------------- derived values
    @property
    def worst_case_charge_seconds(self) -> float:
        """Upper bound of one charge with all its retries: attempts × timeout + backoff."""
        attempts = self.payment_retry_max_attempts
        waits = sum(
            min(self.payment_retry_base_delay_ms * (2**i + 1), self.payment_retry_max_delay_ms)
            for i in range(attempts - 1)
        )
        return (attempts * self.payment_gateway_timeout_ms + waits) / 1000

    @property
    def dlq_name(self) -> str:
        return f"{self.rabbitmq_consume_queue}.dlq"

    @property
    def cancel_dlq_name(self) -> str:
        return f"{self.rabbitmq_cancel_queue}.dlq"

    @property
    def otlp_protocol(self) -> str:
        """The OTLP protocol in effect: as set, else gRPC for an endpoint on port 4317."""
        if self.otel_exporter_otlp_protocol:
            return self.otel_exporter_otlp_protocol
        endpoint = self.otel_exporter_otlp_endpoint
        if endpoint and urlsplit(endpoint).port == 4317:
            return "grpc"
        return "http/protobuf"

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        if self.admin_token is None:
            return ()
        return tuple(t.strip() for t in self.admin_token.get_secret_value().split(",") if t.strip())

    def _db_parts(self) -> tuple[str, int, str, str | None, str | None]:
        host, port, database, user, password = _parse_db_url(self.db_url)
        if self.db_username is not None:
            user = self.db_username
        if self.db_password is not None:
            password = self.db_password.get_secret_value()
        return host, port, database, user, password

    @property
    def database_name(self) -> str:
        return self._db_parts()[2]

    def postgres_dsn(self, database: str | None = None) -> str:
        """A libpq-style URL for asyncpg (credentials from DB_USERNAME/DB_PASSWORD win)."""
        host, port, db, user, password = self._db_parts()
        auth = ""
        if user:
            auth = quote(user, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"postgresql://{auth}{host}:{port}/{quote(database or db, safe='')}"

    def sqlalchemy_url(self) -> str:
        return self.postgres_dsn().replace("postgresql://", "postgresql+asyncpg://", 1)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def amqp_url(self) -> str:
        user = quote(self.rabbitmq_username, safe="")
        password = quote(self.rabbitmq_password.get_secret_value(), safe="")
        vhost = quote(self.rabbitmq_vhost, safe="")
        return f"amqp://{user}:{password}@{self.rabbitmq_host}:{self.rabbitmq_port}/{vhost}"

    def summary(self) -> dict[str, object]:
        """The settings for the start-up log line, secrets masked."""
        host, port, db, user, _ = self._db_parts()
        return {
            "http": f"{self.host}:{self.port}",
            "database": f"{host}:{port}/{db}",
            "db_user": user,
            "db_pool_size": self.db_pool_size,
            "rabbitmq": f"{self.rabbitmq_host}:{self.rabbitmq_port}{self.rabbitmq_vhost}",
            "rabbitmq_user": self.rabbitmq_username,
            "queue": self.rabbitmq_consume_queue,
            "cancel_queue": self.rabbitmq_cancel_queue,
            "max_event_bytes": self.max_event_bytes,
            "exchange": self.rabbitmq_publish_exchange,
            "consumer_concurrency": self.consumer_concurrency,
            "gateway": {
                "kind": self.payment_gateway,
                "url": self.payment_gateway_url,
                "circuit_open_seconds": self.payment_circuit_open_seconds,
                "max_wait_seconds": self.payment_max_wait_seconds,
                "always_succeed": self.payment_always_succeed,
                "delay_ms": self.payment_delay_ms,
                "timeout_ms": self.payment_gateway_timeout_ms,
                "retry_max_attempts": self.payment_retry_max_attempts,
                "retry_base_delay_ms": self.payment_retry_base_delay_ms,
                "retry_max_delay_ms": self.payment_retry_max_delay_ms,
            },
            "lease_seconds": self.payment_lease_seconds,
            "reconcile_interval_seconds": self.reconcile_interval_seconds,
            "shutdown_grace_seconds": self.shutdown_grace_seconds,
            "admin_token": "***" if self.admin_token else None,
            "auth_issuer": self.auth_issuer,
            "tracing": self.otlp_protocol if self.otel_exporter_otlp_endpoint else None,
            "admin_rate_limit": self.admin_rate_limit,
            "log": f"{self.log_level}/{self.log_format}",
        }


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "__root__"]
    message = first.get("msg", "invalid value")
    message = message.removeprefix("Value error, ")
    if location:
        variable = location[0].upper()
        value = first.get("input")
        secret = {"DB_PASSWORD", "RABBITMQ_PASSWORD", "ADMIN_TOKEN", "PAYMENT_GATEWAY_API_KEY"}
        shown = "" if variable in secret else f" (got {value!r})"
        return f"{variable}: {message}{shown}"
    return message


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise ConfigurationError with a one-line message on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # values are validated by the model
    except ValidationError as error:
        raise ConfigurationError(f"configuration error: {_describe(error)}") from None


def load_settings_or_exit() -> Settings:
    """For the command line: print one line naming the variable and exit 2 on a bad value."""
    try:
        return load_settings()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
