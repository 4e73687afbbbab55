"""docs/configuration.md documents every setting the service reads, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings_help import settings_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_and_every_documented_variable_exists() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", DOC.read_text()))
    variables = {variable for variable, _, _ in settings_rows()}
    assert variables - documented == set(), "settings missing from docs/configuration.md"
    tables = {
        name
        for line in DOC.read_text().splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    }
    assert tables - variables == set(), "docs/configuration.md lists variables the service does not read"
