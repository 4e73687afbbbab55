"""Settings: JDBC URLs, credentials, and one-line errors for bad values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import ConfigurationError, load_settings


def test_jdbc_url_is_converted_and_credentials_override() -> None:
    settings = load_settings(
        db_url="jdbc:postgresql://db.internal:6543/payments?user=ignored", db_username="svc", db_password="s3cr:t"
    )
    assert settings.postgres_dsn() == "postgresql://svc:s3cr%3At@db.internal:6543/payments"
    assert settings.sqlalchemy_url() == "postgresql+asyncpg://svc:s3cr%3At@db.internal:6543/payments"
    assert settings.database_name == "payments"


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h:5432/db"),
        ("jdbc:postgresql://h:1/db?user=a&password=b", "postgresql://a:b@h:1/db"),
    ],
)
def test_accepted_url_forms(url: str, dsn: str) -> None:
    assert load_settings(db_url=url).postgres_dsn() == dsn


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8085)
    assert settings.rabbitmq_consume_queue == "payment.stock-confirmed"
    assert settings.rabbitmq_publish_exchange == "foodies"
    assert settings.dlq_name == "payment.stock-confirmed.dlq"
    assert settings.payment_delay_ms == 100 and settings.consumer_concurrency == 16
    assert settings.payment_lease_seconds + settings.reconcile_interval_seconds <= 60


def test_admin_tokens_are_comma_separated() -> None:
    assert load_settings(admin_token=" a, b ,").admin_tokens == ("a", "b")
    assert load_settings(admin_token="").admin_tokens == ()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PAYMENT_DELAY_MS", "-5"),
        ("DB_URL", "mysql://h/db"),
        ("DB_URL", "jdbc:postgresql://:5432/"),
        ("CONSUMER_CONCURRENCY", "0"),
        ("LOG_FORMAT", "xml"),
        ("PAYMENT_ALWAYS_SUCCEED", "maybe"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"configuration error: {variable}:")


def test_lease_must_outlast_the_longest_charge() -> None:
    with pytest.raises(ConfigurationError, match="PAYMENT_LEASE_SECONDS"):
        load_settings(payment_lease_seconds=5, payment_gateway_timeout_ms=5000)


@pytest.mark.parametrize(("variable", "value"), [("PORT", "abc"), ("PAYMENT_DELAY_MS", "-5"), ("DB_URL", "nonsense")])
def test_bad_setting_stops_the_command_with_one_line(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    done = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
