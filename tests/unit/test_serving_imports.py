"""The serving process loads only what serving needs: SQLAlchemy, SQLModel and Alembic come with
a migration or the first admin query, PyJWT with OpenID Connect, httpx with the HTTP gateway.
The shortcuts that make this possible (a written-out column list, a head revision read from
the files) are checked against the libraries they avoid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from app.persistence.mapping import COLUMNS, INTERNAL_COLUMNS
from app.persistence.migrate import alembic_config
from app.persistence.schema_version import head_revision
from app.persistence.tables import PaymentRow

ROOT = Path(__file__).resolve().parents[2]
LAZY = ("sqlalchemy", "sqlmodel", "alembic", "jwt", "cryptography", "httpx")


def test_the_written_out_columns_are_the_models_in_table_order() -> None:
    model = tuple(c.name for c in sa.inspect(PaymentRow).columns if c.name not in INTERNAL_COLUMNS)
    assert model == COLUMNS


def test_the_head_revision_read_from_the_files_is_alembics() -> None:
    script = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused/unused"))
    assert head_revision() == script.get_current_head()


def _loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {LAZY!r} if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_service_loads_none_of_the_lazy_libraries() -> None:
    code = (
        "from app.config import load_settings\n"
        "from app.bootstrap import create_app\n"
        "create_app(load_settings(db_url='postgresql://u@127.0.0.1:1/db'))"
    )
    assert _loaded_after(code) == []


def test_the_http_gateway_and_oidc_load_their_libraries_when_configured() -> None:
    code = (
        "from app.config import load_settings\n"
        "from app.bootstrap import build\n"
        "build(load_settings(db_url='postgresql://u@127.0.0.1:1/db', payment_gateway='http',\n"
        "      payment_gateway_url='http://127.0.0.1:1', auth_issuer='http://127.0.0.1:1/realms/f',\n"
        "      auth_audience='payment'))"
    )
    loaded = _loaded_after(code)
    assert {"httpx", "jwt"} <= set(loaded)
    assert "sqlalchemy" not in loaded
