"""Helpers for the manifest tests: build a kustomization offline with `kubectl kustomize`, pick
documents out of the build, validate them against the Kubernetes schemas, and follow the
environment of a container to its sources."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "kustomize"
FIXTURES = ROOT / "tests" / "fixtures"
# The oldest Kubernetes minor we support and the newest schema set the validator ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if found is None:
        pytest.fail("kubectl is needed to build the kustomize manifests (kubectl kustomize)")
    return found


@functools.cache
def _built(directory: Path) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def build(directory: Path) -> list[Doc]:
    """The documents of a kustomization (a fresh copy: tests may change them)."""
    return yaml.safe_load(yaml.safe_dump(list(_built(directory))))


def build_with(tmp: Path, resources: list[Path], components: list[Path]) -> list[Doc]:
    """Build a kustomization made in `tmp` of the given directories (paths relative to it:
    kustomize refuses absolute ones)."""
    relative = lambda path: os.path.relpath(path, tmp)  # noqa: E731 - a one-line helper
    text = yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [relative(path) for path in resources],
            "components": [relative(path) for path in components],
        }
    )
    (tmp / "kustomization.yaml").write_text(text)
    return build(tmp)


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def generated(docs: list[Doc], kind: str, name: str) -> Doc:
    """A generated ConfigMap or Secret by its name before kustomize appended the hash."""
    matches = [d for d in find(docs, kind) if d["metadata"]["name"].rsplit("-", 1)[0] == name]
    assert len(matches) == 1, f"{kind} {name} (generated) is not in the build"
    return matches[0]


def validate(docs: list[Doc], label: str) -> int:
    """Every document against the Kubernetes schemas of each supported version, strict; returns
    how many checks ran (the rabbitmq.com kinds have no schema there)."""
    checked = 0
    for version in K8S_VERSIONS:
        for doc in docs:
            if doc["apiVersion"].startswith("rabbitmq.com/"):
                continue  # the messaging-topology operator's kinds: checked field by field elsewhere
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                kind_name = f"{doc['kind']}/{doc['metadata']['name']}"
                pytest.fail(f"{label}: {kind_name} invalid for {version} at {path}: {error.message}")
            except SchemaNotFoundError as error:
                pytest.fail(f"{label}: {error.message}")
            checked += 1
    return checked


def container(workload: Doc, name: str) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def env_sources(c: Doc) -> dict[str, Any]:
    """Variable -> ("configMap"|"secret", name, key) or ("value", value)."""
    sources: dict[str, Any] = {}
    for var in c.get("env", []):
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            sources[var["name"]] = ("configMap", ref["name"], ref["key"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            sources[var["name"]] = ("secret", ref["name"], ref["key"])
        else:
            sources[var["name"]] = ("value", var.get("value"))
    return sources


def matches_labels(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def documented_snippet(document: Path, target: str) -> str:
    """The YAML block that follows `<!-- tested: <target> ...-->` in a Markdown page: the
    patches the documentation tells operators to add, checked by building them."""
    text = document.read_text()
    marker = f"<!-- tested: {target} "
    assert marker in text, f"{document.name} has no block marked {marker}"
    after = text[text.index(marker) :]
    start = after.index("```yaml\n") + len("```yaml\n")
    return after[start : after.index("```", start)]
