"""The `payment-service` command line: version, generated settings help, argument ranges, dispatch."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

import app
import app.cli as cli
from app.config import Settings
from app.messaging.dlq import MAX_LIST, MAX_REPLAY, DlqOperations

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "payment-service"


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_one_version_number_for_the_package_the_module_and_the_command() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert app.__version__ == version("foodies-payment") == declared
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"payment-service {declared}"


def test_the_committed_asyncapi_document_and_the_released_image_tag_carry_the_version() -> None:
    asyncapi = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    assert asyncapi["info"]["version"] == app.__version__, "regenerate asyncapi.yaml"
    released = {}
    for overlay in (ROOT / "kustomize" / "overlays").glob("*/kustomization.yaml"):
        for image in yaml.safe_load(overlay.read_text()).get("images", []):
            if image["name"] == "foodies/payment-service" and image.get("newTag") != "dev":  # dev: a local build
                released[overlay.parent.name] = image.get("newTag")
    assert "prod" in released
    assert set(released.values()) == {app.__version__}, f"overlays run another release: {released}"


def test_changelog_has_an_entry_for_the_current_version() -> None:
    assert f"## [{app.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_serve_help_lists_every_setting_with_its_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("serve", "--help", capsys=capsys)
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ") and line.split()}
    for name, field in Settings.model_fields.items():
        variable = name.upper()
        assert variable in rows, f"{variable} missing from serve --help"
        default = field.get_default()
        if default is None:
            assert rows[variable] == "unset"
        elif isinstance(default, SecretStr):
            assert rows[variable] == "***"
            assert default.get_secret_value() not in out.split(variable, 1)[1].splitlines()[0]
        elif isinstance(default, bool):
            assert rows[variable] == str(default).lower()
        else:
            assert rows[variable] == str(default)
    assert "integer 1..65535" in out.split("  PORT ", 1)[1].splitlines()[0]


def test_top_level_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("--help", capsys=capsys)
    assert code == 0
    for command in ("serve", "migrate", "dlq", "refund", "fake-gateway"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "--limit", "0"],
        ["dlq", "list", "--limit", str(MAX_LIST + 1)],
        ["dlq", "list", "--limit", "ten"],
        ["dlq", "replay", "--limit", "-1"],
        ["dlq", "replay", "--limit", str(MAX_REPLAY + 1)],
        ["dlq", "list", "--queue", "payment.stock-confirmed"],
        ["refund", "0"],
        ["refund", "12", "--reason", "x" * 501],
        ["refund", "12", "--reason", "   "],
        ["fake-gateway", "--port", "0"],
        ["fake-gateway", "--port", "65536"],
        ["no-such-command"],
    ],
)
def test_the_parser_rejects_out_of_range_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(*argv, capsys=capsys)
    assert code == 2
    assert "usage: payment-service" in err
    assert not out


def test_parser_accepts_the_bounds() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["dlq", "list", "--limit", str(MAX_LIST)]).limit == MAX_LIST
    assert parser.parse_args(["dlq", "list"]).queue == "stock-confirmed"
    assert parser.parse_args(["refund", str(2**63 - 1), "--reason", "r" * 500]).order_id == 2**63 - 1
    assert parser.parse_args([]).command is None


def test_no_command_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(cli, "serve", lambda settings: served.append(settings) or 0)
    assert cli.main([]) == 0
    assert cli.main(["serve"]) == 0
    assert len(served) == 2
    assert all(isinstance(s, Settings) for s in served)


def test_fake_gateway_delegates_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("app.gateway.fake_server")
    fake.main = lambda argv: calls.append(argv) or 3  # type: ignore[attr-defined]  # a stand-in module
    monkeypatch.setitem(sys.modules, "app.gateway.fake_server", fake)
    assert cli.main(["fake-gateway", "--port", "9099"]) == 3
    assert calls == [["--host", "127.0.0.1", "--port", "9099"]]


def test_options_passed_on_are_ones_the_fake_gateway_accepts() -> None:
    from app.gateway.fake_server import build_parser

    options = build_parser().parse_args(["--host", "127.0.0.1", "--port", "9099"])
    assert (options.host, options.port) == ("127.0.0.1", 9099)


def test_refund_delegates_and_returns_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    import app.bootstrap

    monkeypatch.setattr(
        app.bootstrap,
        "refund_from_cli",
        lambda settings, order_id, reason: calls.append((settings, order_id, reason)) or 4,
    )
    assert cli.main(["refund", "42", "--reason", "customer asked"]) == 4
    assert cli.main(["refund", "43"]) == 4
    assert [(order, reason) for _, order, reason in calls] == [(42, "customer asked"), (43, None)]
    assert isinstance(calls[0][0], Settings)


class _Result:
    def to_json(self) -> dict[str, Any]:
        return {"ok": True}


class _FakeDlq:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str | None]] = []

    async def list(self, limit: int = 100, queue: str | None = None) -> _Result:
        self.calls.append(("list", limit, queue))
        return _Result()

    async def replay(self, limit: int | None = None, queue: str | None = None) -> _Result:
        self.calls.append(("replay", limit, queue))
        return _Result()


def _use_dlq(monkeypatch: pytest.MonkeyPatch, operations: Any) -> None:
    import app.messaging.dlq as dlq

    monkeypatch.setattr(dlq.DlqOperations, "from_settings", classmethod(lambda cls, settings: operations))


def test_the_fake_has_the_operations_signature() -> None:
    for name in ("list", "replay"):
        assert list(inspect.signature(getattr(DlqOperations, name)).parameters) == ["self", "limit", "queue"]
        assert list(inspect.signature(getattr(_FakeDlq, name)).parameters) == ["self", "limit", "queue"]


def test_dlq_passes_the_queue_through(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    operations = _FakeDlq()
    _use_dlq(monkeypatch, operations)
    assert run("dlq", "list", "--limit", "5", "--queue", "order-cancelled", capsys=capsys)[:2] == (
        0,
        '{\n  "ok": true\n}\n',
    )
    assert run("dlq", "replay", capsys=capsys)[0] == 0
    assert operations.calls == [("list", 5, "order-cancelled"), ("replay", None, "stock-confirmed")]
