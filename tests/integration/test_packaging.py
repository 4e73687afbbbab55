"""The built wheel (what the image installs) carries every file of the package: modules,
migrations and the docs pages' assets, and the version from pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_every_file_of_the_package(tmp_path: Path) -> None:
    # Built from a copy: a build writes build/ and an .egg-info next to pyproject.toml, and the
    # latter would shadow the installed metadata of the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith(f"foodies_payment-{version}-")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert sources - shipped == set(), "files under app/ missing from the wheel: add them to package data"
    assert any(name.startswith("app/persistence/migrations/versions/") for name in shipped)
    assert any(name.startswith("app/http/static/") for name in shipped)
