"""Declared dependencies and the lock files: every import declared, bounds, and the locks in step."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
# Packages that are only for tests, linting or generating documents: never in the image.
DEV_ONLY = {
    "pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "schemathesis", "openapi-spec-validator",
    "testcontainers", "kubernetes-validate", "pyyaml", "ruff", "mypy", "uv", "typer", "rich", "watchfiles", "py-spy",
}  # fmt: skip


def pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    found = re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^\s;\\]+)", text, flags=re.MULTILINE)
    return {canonicalize_name(package): version for package, version in found}


class _Imports(ast.NodeVisitor):
    """Top-level module names imported, split into at import time and inside functions (lazy)."""

    def __init__(self) -> None:
        self.eager: set[str] = set()
        self.lazy: set[str] = set()
        self._in_function = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._in_function += 1
        self.generic_visit(node)
        self._in_function -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        self._add(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add([node.module])

    def _add(self, modules: Iterable[str]) -> None:
        (self.lazy if self._in_function else self.eager).update(m.split(".")[0] for m in modules)


def imported_distributions(folder: str, *, lazy: bool) -> dict[str, set[str]]:
    """Third-party modules imported under folder (at import time, or only inside functions)
    -> the distributions providing them."""
    providers = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        imports = _Imports()
        imports.visit(ast.parse(path.read_text(), str(path)))
        for top in imports.lazy - imports.eager if lazy else imports.eager:
            if top in sys.stdlib_module_names or top in ("app", "tests", "__future__"):
                continue
            found[top] = {canonicalize_name(d) for d in providers.get(top, [f"<not installed: {top}>"])}
    return found


@pytest.mark.parametrize(
    ("folder", "lazy", "declared"),
    [
        ("app", False, RUNTIME),
        # A development command inside the package (e.g. writing asyncapi.yaml) may import a
        # dev dependency, inside the function that needs it.
        ("app", True, RUNTIME + DEV),
        ("tests", False, RUNTIME + DEV),
        ("tests", True, RUNTIME + DEV),
    ],
)
def test_every_import_is_a_declared_dependency(folder: str, lazy: bool, declared: list[Requirement]) -> None:
    names = {canonicalize_name(r.name) for r in declared}
    imported = imported_distributions(folder, lazy=lazy)
    undeclared = {module: dists for module, dists in imported.items() if not dists & names}
    assert not undeclared, f"imported under {folder}/ but not declared in pyproject.toml: {undeclared}"


@pytest.mark.parametrize("requirement", RUNTIME + DEV, ids=str)
def test_every_dependency_has_a_tested_floor_and_an_upper_bound(requirement: Requirement) -> None:
    operators = {spec.operator for spec in requirement.specifier}
    assert ">=" in operators, f"{requirement}: no lower bound"
    assert "<" in operators, f"{requirement}: no upper bound"


@pytest.mark.parametrize(("lock", "requirements"), [("runtime.txt", RUNTIME), ("dev.txt", RUNTIME + DEV)])
def test_the_lock_satisfies_pyproject(lock: str, requirements: list[Requirement]) -> None:
    pinned = pins(lock)
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements/{lock}: run scripts/lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pinned[name]}, outside {requirement.specifier}: run scripts/lock"
        )


def test_the_runtime_lock_has_no_dev_tools_and_agrees_with_the_dev_lock() -> None:
    runtime, dev = pins("runtime.txt"), pins("dev.txt")
    assert not DEV_ONLY & set(runtime), "test or doc tools would end up in the image"
    assert {name: dev.get(name) for name in runtime} == runtime
    assert {"setuptools", "wheel"} <= set(pins("build.txt"))


@pytest.mark.parametrize("lock", ["runtime.txt", "dev.txt", "build.txt"])
def test_every_pin_carries_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[a-z0-9])", (ROOT / "requirements" / lock).read_text())
    pinned = [entry for entry in entries if "==" in entry.split("\n", 1)[0]]
    assert pinned
    for entry in pinned:
        assert "--hash=sha256:" in entry, entry.split("\n", 1)[0]
