"""Smoke runs of the chaos run (`bench/chaos.py`): a few hundred orders on three real replicas against the fake HTTP
gateway, with replicas killed by SIGKILL (and, in the second run, a short gateway outage), but without restarting the
shared RabbitMQ and PostgreSQL. The script's own audit must come out clean and its counts must add up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import ROOT

CHAOS = ROOT / "bench" / "chaos.py"
ORDERS = 150


def database_url() -> str:
    base = urlsplit(os.environ.get("TEST_DB_URL", "postgresql://root@127.0.0.1:5432"))
    name = os.environ.get("TEST_DATABASE", "payments_test") + "_chaos"  # the run empties its table: its own
    return base._replace(path=f"/{name}").geturl()


def chaos(tmp_path: Path, *extra: str) -> dict[str, Any]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the chaos run needs rabbitmqctl for a vhost of its own")
    command = [
        sys.executable,
        str(CHAOS),
        *("--orders", str(ORDERS), "--duration", "12", "--kill-every", "3", "--settle-timeout", "90"),
        *("--no-broker-restart", "--no-db-restart", "--db-url", database_url(), "--work-dir", str(tmp_path)),
        *("--amqp-url", os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")),
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, f"chaos run failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def assert_clean(report: dict[str, Any]) -> None:
    audit = report["audit"]
    assert report["ok"] is True and audit["violations"] == {} and audit["examples"] == {}
    rows = audit["rows"]
    assert sum(rows.values()) == audit["orders"] == ORDERS
    assert set(rows) <= {"SUCCEEDED", "FAILED", "REFUNDED", "CANCELLED"}
    assert audit["gateway"]["captured"] == rows.get("SUCCEEDED", 0) + rows.get("REFUNDED", 0)
    assert audit["gateway"]["refunded"] == rows.get("REFUNDED", 0)
    assert audit["published"].get("payment.failed", 0) == rows.get("FAILED", 0)
    assert audit["published"].get("payment.refunded", 0) == rows.get("REFUNDED", 0)
    assert audit["parked"] == audit["poison_sent"] and sum(audit["parked"].values()) > 0
    assert set(audit["cards"]) == {"0000", "0001", "0002", "3333", "6666", "7777", "8888", "9999"}
    assert audit["failure_codes"]["TIMEOUT"] >= 1 and audit["failure_codes"]["GATEWAY_ERROR"] >= 1
    assert sum(audit["cancellations_sent"].values()) >= ORDERS // 10


def test_chaos_run_with_kills_audits_clean(tmp_path: Path) -> None:
    report = chaos(tmp_path, "--no-outage")
    assert_clean(report)
    assert report["disruptions"]["kills"] >= 2
    assert sum(report["figures"]["starts"].values()) > 3, "killed replicas were restarted"


def test_chaos_run_with_kills_and_a_gateway_outage_audits_clean(tmp_path: Path) -> None:
    report = chaos(tmp_path, "--outage-seconds", "4")
    assert_clean(report)
    assert report["disruptions"]["gateway_outage"] == {"seconds": 4.0}
