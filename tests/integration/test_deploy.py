"""Deployment artefacts: the Dockerfile and the kustomize base and overlays.

Everything runs offline: `kubectl kustomize` builds the manifests, `kubernetes-validate`
checks them against the Kubernetes OpenAPI schemas it ships, the rabbitmq.com kinds are
checked by hand against the messaging-topology operator's v1beta1 fields, and the
manifests are compared with what the app really reads and serves.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from app.config import Settings
from app.messaging.topology import ORDER_CANCELLED_KEY, STOCK_CONFIRMED_KEY, park_key, replay_key

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "kustomize"
BUILDS = {
    "base": KUSTOMIZE / "base",
    "dev": KUSTOMIZE / "overlays" / "dev",
    "prod": KUSTOMIZE / "overlays" / "prod",
}
OVERLAYS = ("dev", "prod")

NAMESPACE = "foodies"
APP = "payment-service"
IMAGE = "foodies/payment-service"
RABBITMQ_CLUSTER = "foodies-rabbitmq"
# The oldest Kubernetes minor we support and the newest schema set the validator ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

# Settings that have no value safe for production: every overlay must provide them.
REQUIRED_SETTINGS = (
    "DB_URL",
    "DB_USERNAME",
    "DB_PASSWORD",
    "RABBITMQ_HOST",
    "RABBITMQ_USERNAME",
    "RABBITMQ_PASSWORD",
    "ADMIN_TOKEN",
)
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
DEFAULT_PORT = Settings.model_fields["port"].default
DEFAULT_SHUTDOWN_GRACE = Settings.model_fields["shutdown_grace_seconds"].default


# ----------------------------------------------------------------------------- helpers
def _kubectl() -> str:
    found = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if found is None:
        pytest.fail("kubectl is needed to build the kustomize manifests (kubectl kustomize)")
    return found


@functools.cache
def _built(name: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(BUILDS[name])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {name} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def build(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_built(name)))


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment(docs: list[dict]) -> dict:
    return one(docs, "Deployment", APP)


def app_container(docs: list[dict]) -> dict:
    containers = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == APP)


def config_map(docs: list[dict], name: str) -> dict:
    """A ConfigMap by its generated name (kustomize appends a hash suffix)."""
    matches = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"ConfigMap {name} is not in the build"
    return matches[0]


def app_config(docs: list[dict]) -> dict[str, str]:
    """The ConfigMap data the app container reads through envFrom."""
    data: dict[str, str] = {}
    for source in app_container(docs).get("envFrom", []):
        if "configMapRef" in source:
            data.update(config_map(docs, source["configMapRef"]["name"]).get("data", {}))
    return data


def effective_setting(docs: list[dict], name: str) -> Any:
    """The value the app sees for a setting: the manifests' value, else the code default."""
    data = app_config(docs)
    if name in data:
        return data[name]
    for var in app_container(docs).get("env", []):
        if var["name"] == name and "value" in var:
            return var["value"]
    return Settings.model_fields[name.lower()].default


def secret_refs(docs: list[dict]) -> dict[str, tuple[str, str]]:
    """Env var -> (Secret name, key) for the app container."""
    refs = {}
    for var in app_container(docs).get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs[var["name"]] = (ref["name"], ref["key"])
    return refs


def matches_labels(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_labels(docs: list[dict]) -> dict[str, str]:
    return deployment(docs)["spec"]["template"]["metadata"]["labels"]


def _pre_stop_seconds(container: dict) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].endswith("sleep"):
        return float(command[1])
    pytest.fail(f"unrecognised preStop hook {pre_stop}: make its duration visible to this test")


# ------------------------------------------------------------------ build and schemas
@pytest.mark.parametrize("name", BUILDS)
def test_kustomize_builds(name):
    docs = build(name)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "StatefulSet",
        "Queue",
        "Binding",
        "User",
        "Permission",
    } <= kinds
    for doc in docs:
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "foodies"
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate resources"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", BUILDS)
def test_documents_validate_against_kubernetes_schemas(name, version):
    checked = 0
    for doc in build(name):
        if doc["apiVersion"].startswith("rabbitmq.com/"):
            continue  # operator CRDs: see test_rabbitmq_resources_have_the_fields_the_operator_needs
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(
                f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for {version} at {path}: {error.message}"
            )
        except SchemaNotFoundError as error:
            pytest.fail(f"{name}: {error.message}")
        checked += 1
    assert checked >= 8


def test_validator_works_offline_and_catches_mistakes():
    """The schemas ship with the package, and strict mode rejects unknown fields."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 8085}], "selektor": {"a": "b"}},
    }
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


# --------------------------------------------------------------- rabbitmq.com (CRDs)
# Fields of the messaging-topology operator's rabbitmq.com/v1beta1 kinds that these
# manifests may use: (required, allowed) per kind, plus the field types we rely on.
_CLUSTER_REF = "rabbitmqClusterReference"
RABBITMQ_SPECS = {
    "Queue": (
        {"name", _CLUSTER_REF},
        {
            "name",
            "vhost",
            "type",
            "durable",
            "autoDelete",
            "deleteIfEmpty",
            "deleteIfUnused",
            "arguments",
            _CLUSTER_REF,
        },
    ),
    "Exchange": (
        {"name", _CLUSTER_REF},
        {"name", "vhost", "type", "durable", "autoDelete", "arguments", _CLUSTER_REF},
    ),
    "Binding": (
        {"source", "destination", "destinationType", _CLUSTER_REF},
        {"vhost", "source", "destination", "destinationType", "routingKey", "arguments", _CLUSTER_REF},
    ),
    "User": ({_CLUSTER_REF}, {"tags", "importCredentialsSecret", _CLUSTER_REF}),
    "Permission": (
        {"vhost", "permissions", _CLUSTER_REF},
        {"user", "userReference", "vhost", "permissions", _CLUSTER_REF},
    ),
}
_FIELD_TYPES = {
    "name": str,
    "vhost": str,
    "type": str,
    "source": str,
    "destination": str,
    "destinationType": str,
    "routingKey": str,
    "user": str,
    "durable": bool,
    "autoDelete": bool,
    "deleteIfEmpty": bool,
    "deleteIfUnused": bool,
    "arguments": dict,
    "tags": list,
    "permissions": dict,
    "importCredentialsSecret": dict,
    "userReference": dict,
    _CLUSTER_REF: dict,
}


def rabbitmq_docs(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["apiVersion"].split("/")[0] == "rabbitmq.com"]


@pytest.mark.parametrize("name", BUILDS)
def test_rabbitmq_resources_have_the_fields_the_operator_needs(name):
    docs = rabbitmq_docs(build(name))
    assert docs
    for doc in docs:
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["apiVersion"] == "rabbitmq.com/v1beta1", label
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, label
        assert doc["kind"] in RABBITMQ_SPECS, f"no field list for {label}"
        required, allowed = RABBITMQ_SPECS[doc["kind"]]
        spec = doc["spec"]
        assert required <= set(spec), f"{label} lacks {required - set(spec)}"
        assert set(spec) <= allowed, f"{label} has unknown fields {set(spec) - allowed}"
        for field, value in spec.items():
            assert isinstance(value, _FIELD_TYPES[field]), f"{label}: {field} should be {_FIELD_TYPES[field].__name__}"
        assert spec[_CLUSTER_REF] == {"name": RABBITMQ_CLUSTER}, label
        if doc["kind"] == "Binding":
            assert spec["destinationType"] in ("queue", "exchange"), label
        if doc["kind"] == "Exchange":
            assert spec.get("type", "direct") in ("direct", "fanout", "headers", "topic"), label
        if doc["kind"] == "Permission":
            assert ("user" in spec) != ("userReference" in spec), f"{label}: exactly one of user, userReference"
            assert set(spec["permissions"]) <= {"configure", "write", "read"}, label
            assert all(isinstance(v, str) for v in spec["permissions"].values()), label
            if "userReference" in spec:
                one(docs, "User", spec["userReference"]["name"])
        if doc["kind"] == "User":
            for tag in spec.get("tags", []):
                assert tag in ("management", "policymaker", "monitoring", "administrator"), label


def expected_bindings(exchange: str, consume: str, cancel: str) -> set[tuple[str, str, str]]:
    """(source, destination queue, routing key) of every binding the service itself declares."""
    found = {
        (exchange, consume, STOCK_CONFIRMED_KEY),
        (exchange, cancel, ORDER_CANCELLED_KEY),
    }
    for queue in (consume, cancel):
        found |= {(exchange, queue, replay_key(queue)), (exchange, f"{queue}.dlq", park_key(queue))}
    return found


@pytest.mark.parametrize("name", BUILDS)
def test_rabbitmq_topology_matches_the_contract_and_the_settings(name):
    docs = build(name)
    rabbit = rabbitmq_docs(docs)
    vhost = effective_setting(docs, "RABBITMQ_VHOST")
    queue_name = effective_setting(docs, "RABBITMQ_CONSUME_QUEUE")
    cancel_name = effective_setting(docs, "RABBITMQ_CANCEL_QUEUE")
    exchange = effective_setting(docs, "RABBITMQ_PUBLISH_EXCHANGE")
    assert (queue_name, cancel_name, exchange) == ("payment.stock-confirmed", "payment.order-cancelled", "foodies")
    # The topology lives on the cluster the service connects to.
    assert effective_setting(docs, "RABBITMQ_HOST") == RABBITMQ_CLUSTER

    queues = {q["spec"]["name"]: q["spec"] for q in find(rabbit, "Queue")}
    assert set(queues) == {queue_name, f"{queue_name}.dlq", cancel_name, f"{cancel_name}.dlq"}
    for spec in queues.values():
        # Plain durable classic queues: no arguments, no type (it would become x-queue-type).
        assert spec["durable"] is True
        assert spec.get("autoDelete", False) is False
        assert spec.get("deleteIfEmpty") is True, "deleting the resource must not drop messages"
        assert "arguments" not in spec and "type" not in spec
        assert spec.get("vhost", "/") == vhost

    bindings = find(rabbit, "Binding")
    for binding in bindings:
        spec = binding["spec"]
        assert spec["vhost"] == vhost and spec["destinationType"] == "queue", binding["metadata"]["name"]
        assert "arguments" not in spec
    found = [(b["spec"]["source"], b["spec"]["destination"], b["spec"]["routingKey"]) for b in bindings]
    assert len(found) == len(set(found)), "a binding twice"
    assert set(found) == expected_bindings(exchange, queue_name, cancel_name)
    # Parked and replayed copies never reach a consumer of the outcomes (payment.* / payment.#).
    for _, _, key in found:
        assert key in (STOCK_CONFIRMED_KEY, ORDER_CANCELLED_KEY) or not key.startswith("payment."), key
    for ex in find(rabbit, "Exchange"):
        assert ex["spec"]["name"] == exchange
        assert ex["spec"]["type"] == "topic" and ex["spec"]["durable"] is True
        assert "arguments" not in ex["spec"]
    assert one(rabbit, "Permission")["spec"]["vhost"] == vhost


@pytest.mark.parametrize("name", BUILDS)
def test_rabbitmq_permissions_are_minimal(name):
    """RabbitMQ matches each permission regex against exchange and queue names."""
    docs = build(name)
    permissions = one(docs, "Permission")["spec"]["permissions"]
    exchange = effective_setting(docs, "RABBITMQ_PUBLISH_EXCHANGE")
    queues = {effective_setting(docs, "RABBITMQ_CONSUME_QUEUE"), effective_setting(docs, "RABBITMQ_CANCEL_QUEUE")}
    lots = {f"{queue}.dlq" for queue in queues}
    needed = {
        # declare the exchange, the queues and the parking lots; the lock queue of a parking-lot action
        "configure": {exchange} | queues | lots | {f"{lot}.lock" for lot in lots},
        # publish everything through the exchange (outcomes, parking, replays); bind the four queues
        "write": {exchange} | queues | lots,
        # bind from the exchange, consume, read parked messages
        "read": {exchange} | queues | lots,
    }
    queue = "payment.stock-confirmed"
    others = {
        "",
        "amq.default",
        "amq.topic",
        "amq.direct",
        "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
        "order.stock-confirmed",
        "ordering.payment-succeeded",
        "menu",
        "foodies-x",
        "xfoodies",
        f"{queue}x",
        f"{queue}.dlqx",
        f"{queue}.retry",
        "payment.other",
        "payment-stock-confirmed",
        f"{exchange}.dlx",
        "payment.order-cancelledx",
        "payment.order-cancelled.retry",
        f"{queue}.lock",
        "payment.stock-confirmed.dlq.lockx",
    }
    for kind, names in needed.items():
        pattern = re.compile(permissions[kind])
        assert permissions[kind].startswith("^") and permissions[kind].endswith("$"), f"{kind} must be anchored"
        for resource in names:
            assert pattern.search(resource), f"{kind} does not cover {resource}"
        for resource in others - names:
            assert not pattern.search(resource), f"{kind} also grants {resource!r}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_rabbitmq_user_imports_the_service_credentials(name):
    docs = build(name)
    user = one(docs, "User", one(docs, "Permission")["spec"]["userReference"]["name"])
    secret_name = user["spec"]["importCredentialsSecret"]["name"]
    refs = secret_refs(docs)
    assert refs["RABBITMQ_USERNAME"] == (secret_name, "username")
    assert refs["RABBITMQ_PASSWORD"] == (secret_name, "password")


# -------------------------------------------------------------- consistency with code
def test_probe_paths_are_routes_the_app_serves():
    from app.http.probes import probe_routes

    # The route table only; the handlers (which would use the placeholders) never run here.
    served = {route.path for route in probe_routes(None, None)}  # type: ignore[arg-type]  # placeholders
    container = app_container(build("base"))
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz/startup"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz/liveness"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/healthz/readiness"
    for kind, probe in probes.items():
        assert probe["httpGet"]["path"] in served, kind
        assert probe["httpGet"]["port"] in ("http", DEFAULT_PORT), kind


@pytest.mark.parametrize("name", BUILDS)
def test_container_port_is_the_default_port(name):
    docs = build(name)
    port = int(effective_setting(docs, "PORT"))
    assert port == DEFAULT_PORT == 8085
    container = app_container(docs)
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    service = one(docs, "Service", APP)
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    annotations = deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", BUILDS)
def test_every_env_var_is_a_setting_the_app_reads(name):
    docs = build(name)
    container = app_container(docs)
    names = {var["name"] for var in container.get("env", [])} | set(app_config(docs))
    for source in container.get("envFrom", []):
        assert "prefix" not in source
        if "secretRef" in source:
            secret = find(docs, "Secret", source["secretRef"]["name"])
            assert secret, "envFrom secrets must be visible in the build to be checked"
            names |= set(secret[0].get("data", {}))
    assert names, "no environment at all"
    unknown = names - SETTING_NAMES
    assert not unknown, f"variables the app does not read: {sorted(unknown)}"
    test_only = {"PAYMENT_FAULT_INJECT", "DLQ_REPLAY_FAULT"}
    assert not names & test_only, "test-only crash injection in a deployment"


@pytest.mark.parametrize("name", OVERLAYS)
def test_settings_without_a_safe_default_are_provided(name):
    docs = build(name)
    assert set(REQUIRED_SETTINGS) <= SETTING_NAMES
    config = app_config(docs)
    refs = secret_refs(docs)
    generated = {d["metadata"]["name"]: d for d in find(docs, "Secret")}
    prod_notes = (BUILDS["prod"] / "kustomization.yaml").read_text()
    for setting in REQUIRED_SETTINGS:
        if setting in refs:
            secret_name, key = refs[setting]
            if name == "prod":
                # Referenced, not generated: provided out of band, documented in the overlay.
                assert secret_name not in generated
                assert secret_name in prod_notes and key in prod_notes, f"{secret_name}/{key} undocumented"
            else:
                assert secret_name in generated, f"{setting}: Secret {secret_name} missing"
                assert key in generated[secret_name].get("data", {}), f"{setting}: key {key} missing"
        else:
            assert config.get(setting), f"{setting} is not provided"
    for secret_setting in ("DB_PASSWORD", "RABBITMQ_PASSWORD", "ADMIN_TOKEN"):
        assert secret_setting in refs, f"{secret_setting} must come from a Secret"
        assert secret_setting not in config


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_app_accepts_the_manifest_settings(name):
    """The configured values pass the app's own validation (bounds, lease vs retries, …)."""
    docs = build(name)
    values: dict[str, Any] = {key.lower(): value for key, value in app_config(docs).items()}
    for setting in secret_refs(docs):
        values[setting.lower()] = "from-a-secret"
    settings = Settings(_env_file=None, **values)
    assert settings.database_name == "payments"


@pytest.mark.parametrize("name", BUILDS)
def test_shutdown_grace_fits_in_the_termination_grace_period(name):
    docs = build(name)
    pod = deployment(docs)["spec"]["template"]["spec"]
    termination = pod["terminationGracePeriodSeconds"]
    pre_stop = _pre_stop_seconds(app_container(docs))
    # The configured value, and the code's default should the setting be dropped.
    for grace in {float(effective_setting(docs, "SHUTDOWN_GRACE_SECONDS")), float(DEFAULT_SHUTDOWN_GRACE)}:
        assert pre_stop + grace < termination
        # Worst case after SIGTERM (app/cli.py, app/main.py): uvicorn waits for open HTTP
        # requests up to grace + 5 s, then the broker waits for in-flight payments up to
        # grace; a few seconds more to close the pools.
        worst = pre_stop + (grace + 5) + grace + 5
        assert worst <= termination, (
            f"shutdown may take {worst}s with SHUTDOWN_GRACE_SECONDS={grace}, "
            f"more than terminationGracePeriodSeconds={termination}"
        )


# ------------------------------------------------------------------------ hardening
@pytest.mark.parametrize("name", BUILDS)
def test_pods_are_locked_down(name):
    docs = build(name)
    for workload in (deployment(docs), one(docs, "StatefulSet", "payment-db")):
        pod = workload["spec"]["template"]["spec"]
        label = workload["kind"]
        assert pod["automountServiceAccountToken"] is False, label
        assert pod["enableServiceLinks"] is False, label
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["runAsUser"] > 0, label
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, label
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["readOnlyRootFilesystem"] is True, label
            assert context["capabilities"] == {"drop": ["ALL"]}, label
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, label
            assert context.get("privileged", False) is False, label
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{label} {kind}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{label} {probe}"
    account = one(docs, "ServiceAccount", APP)
    assert account["automountServiceAccountToken"] is False
    assert deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == APP
    image = app_container(docs)["image"]
    assert image.split(":")[0] == IMAGE


@pytest.mark.parametrize("name", BUILDS)
def test_selectors_select_the_service_pods(name):
    docs = build(name)
    labels = _pod_labels(docs)
    assert matches_labels(deployment(docs)["spec"]["selector"]["matchLabels"], labels)
    assert matches_labels(one(docs, "Service", APP)["spec"]["selector"], labels)
    assert matches_labels(one(docs, "PodDisruptionBudget", APP)["spec"]["selector"]["matchLabels"], labels)
    assert matches_labels(one(docs, "NetworkPolicy", APP)["spec"]["podSelector"]["matchLabels"], labels)
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}


@pytest.mark.parametrize("name", BUILDS)
def test_network_policy_allows_only_http_in_and_db_rabbitmq_dns_out(name):
    docs = build(name)
    policy = one(docs, "NetworkPolicy", APP)["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"protocol": "TCP", "port": DEFAULT_PORT}]]

    db_pod_labels = one(docs, "StatefulSet", "payment-db")["spec"]["template"]["metadata"]["labels"]
    rabbit_port = int(effective_setting(docs, "RABBITMQ_PORT"))
    egress = policy["egress"]
    assert len(egress) == 3
    db, rabbit, dns = egress
    assert matches_labels(db["to"][0]["podSelector"]["matchLabels"], db_pod_labels)
    assert db["ports"] == [{"protocol": "TCP", "port": 5432}]
    # RabbitmqCluster pods are labelled app.kubernetes.io/name=<cluster name>.
    assert rabbit["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ_CLUSTER}}}]
    assert rabbit["ports"] == [{"protocol": "TCP", "port": rabbit_port}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert all(rule.get("to") for rule in egress), "an egress rule without 'to' opens everything"

    db_policy = one(docs, "NetworkPolicy", "payment-db")["spec"]
    assert matches_labels(db_policy["podSelector"]["matchLabels"], db_pod_labels)
    assert db_policy["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]
    assert db_policy.get("egress") == []


def test_documented_egress_additions_apply_to_the_base(tmp_path):
    """kustomize/README.md's patches for the collector and the HTTP gateway, built on the base."""
    from tests.integration.manifests import documented_snippet

    snippet = yaml.safe_load(documented_snippet(KUSTOMIZE / "README.md", "kustomize/base"))
    kustomization = {"resources": [os.path.relpath(BUILDS["base"], tmp_path)], **snippet}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(
        [_kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    policy = one(docs, "NetworkPolicy", APP)
    kubernetes_validate.validate(policy, K8S_VERSIONS[-1], strict=True)
    egress = policy["spec"]["egress"]
    assert egress[:3] == one(build("base"), "NetworkPolicy", APP)["spec"]["egress"]
    collector, gateway = egress[3:]
    assert {p["port"] for p in collector["ports"]} == {4317, 4318}
    assert gateway["ports"] == [{"protocol": "TCP", "port": 443}] and gateway["to"][0]["ipBlock"]["cidr"]
    assert all(rule.get("to") for rule in egress)


# ------------------------------------------------------------------------ PostgreSQL
@pytest.mark.parametrize("name", BUILDS)
def test_payment_database_matches_db_url(name):
    from app.config import _parse_db_url

    docs = build(name)
    host, port, database, _, _ = _parse_db_url(effective_setting(docs, "DB_URL"))
    service = one(docs, "Service", host)
    assert service["spec"]["clusterIP"] == "None", "headless Service"
    assert [p["port"] for p in service["spec"]["ports"]] == [port]

    statefulset = one(docs, "StatefulSet", "payment-db")
    spec = statefulset["spec"]
    assert spec["serviceName"] == host
    assert matches_labels(service["spec"]["selector"], spec["template"]["metadata"]["labels"])
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (postgres,) = spec["template"]["spec"]["containers"]
    assert postgres["image"] == "postgres:15"
    assert postgres["ports"][0]["containerPort"] == port
    env = {var["name"]: var for var in postgres["env"]}
    assert env["POSTGRES_DB"]["value"] == database == "payments"
    assert any(m["name"] == "data" and m["mountPath"] == "/var/lib/postgresql/data" for m in postgres["volumeMounts"])
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    refs = secret_refs(docs)
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": refs["DB_USERNAME"][0],
        "key": refs["DB_USERNAME"][1],
    }
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": refs["DB_PASSWORD"][0],
        "key": refs["DB_PASSWORD"][1],
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "pg_isready" in " ".join(postgres[probe]["exec"]["command"]), probe


@pytest.mark.parametrize("name", BUILDS)
def test_database_connections_fit_max_connections(name):
    docs = build(name)
    spec = deployment(docs)["spec"]
    hpas = find(docs, "HorizontalPodAutoscaler")
    most = hpas[0]["spec"]["maxReplicas"] if hpas else spec.get("replicas", 1)
    most += int(spec["strategy"]["rollingUpdate"]["maxSurge"])
    args = one(docs, "StatefulSet", "payment-db")["spec"]["template"]["spec"]["containers"][0].get("args", [])
    max_connections = next((int(a.split("=")[1]) for a in args if a.startswith("max_connections=")), 100)
    # Per pod: the ledger's pool (DB_POOL_SIZE), the HTTP repository's engine (2 + 2
    # overflow, app/main.py) and a migration connection at start-up.
    per_pod = int(effective_setting(docs, "DB_POOL_SIZE")) + 5
    # Headroom: superuser_reserved_connections (3) and an operator's psql session.
    assert most * per_pod + 5 <= max_connections, f"{most} pods × {per_pod} connections exceed {max_connections}"


# -------------------------------------------------------------------------- overlays
def test_base_runs_two_replicas():
    docs = build("base")
    assert deployment(docs)["spec"]["replicas"] == 2
    assert "maxUnavailable" in one(docs, "PodDisruptionBudget", APP)["spec"]


def test_dev_overlay():
    docs = build("dev")
    assert deployment(docs)["spec"]["replicas"] == 1
    config = app_config(docs)
    assert config["LOG_FORMAT"] == "text"
    assert config["LOG_LEVEL"] == "DEBUG"
    generated = {d["metadata"]["name"] for d in find(docs, "Secret")}
    assert {name for name, _ in secret_refs(docs).values()} <= generated
    assert not find(docs, "HorizontalPodAutoscaler")


def test_prod_overlay():
    docs = build("prod")
    assert not find(docs, "Secret"), "production Secrets are referenced, never generated"
    hpa = one(docs, "HorizontalPodAutoscaler", APP)["spec"]
    # Three replicas, owned by the HPA: a fixed spec.replicas would undo its scaling on every apply.
    assert hpa["minReplicas"] == 3
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    assert deployment(docs)["spec"].get("replicas", 3) == 3
    pdb = one(docs, "PodDisruptionBudget", APP)["spec"]
    assert "maxUnavailable" not in pdb
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"]
    repository, _, tag = app_container(docs)["image"].partition(":")
    assert repository == IMAGE
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"production image must be pinned to a release tag, not {tag!r}"
    assert app_config(docs)["LOG_FORMAT"] == "json"
    assert not find(docs, "Exchange"), "the shared foodies exchange belongs to the platform in production"


def test_dashboard_configmap_only_when_the_dashboard_exists():
    dashboard = KUSTOMIZE / "base" / "grafana-dashboard.json"
    names = [d["metadata"]["name"] for d in find(build("base"), "ConfigMap")]
    has_dashboard_map = any("dashboard" in n for n in names)
    if dashboard.exists():
        json.loads(dashboard.read_text())
        assert has_dashboard_map, "add the dashboard's configMapGenerator (hint in kustomize/base/kustomization.yaml)"
    else:
        assert not has_dashboard_map


# -------------------------------------------------------------------------- Dockerfile
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n(?:[ \t]*#[^\n]*\n)*", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def test_dockerfile_is_multi_stage_on_the_tested_python():
    args = dict(rest.split("=", 1) for keyword, rest in _dockerfile_instructions() if keyword == "ARG" and "=" in rest)
    stages = _stages()
    assert len(stages) >= 2
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert tested == "3.11"
    # An exact patch release, so that a rebuild gets the same interpreter, taken from the ARG.
    assert re.fullmatch(rf"{re.escape(tested)}\.\d+", args.get("PYTHON_VERSION", "")), args
    for stage in stages:
        image = stage[0][1].split()[0]
        assert "${PYTHON_VERSION}" in image, f"FROM {image}: use ARG PYTHON_VERSION"
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(rf"python:{re.escape(tested)}\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{{64}})?", image), image
    text = "\n".join(f"{k} {r}" for k, r in _dockerfile_instructions())
    assert not re.search(r"\bpython3\.\d+\b", text), "no hard-coded interpreter: the base image's python"


def test_dockerfile_final_stage_runs_the_app_as_non_root():
    final = _stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root id"
    pod = deployment(build("base"))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)

    exposes = [rest for keyword, rest in final if keyword == "EXPOSE"]
    assert exposes == [str(DEFAULT_PORT)]

    commands = [rest for keyword, rest in final if keyword in ("CMD", "ENTRYPOINT")]
    assert commands, "the final stage needs a command"
    command = json.loads(commands[-1])  # exec form: a JSON array
    assert isinstance(command, list) and command
    if "-m" in command:
        module = command[command.index("-m") + 1]
        assert module.split(".")[0] == "app"
        main = module if module.endswith("__main__") else f"{module}.__main__"
        assert importlib.util.find_spec(main) is not None, f"python -m {module} has no {main}"
    else:
        import tomllib

        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        script = command[0].rsplit("/", 1)[-1]
        assert script in scripts, f"{command[0]} is not a console script of the project"
        if command[0].startswith("/"):
            assert command[0] == f"/opt/venv/bin/{script}", "the script lives in the copied environment"
        module, _, function = scripts[script].partition(":")
        assert module.split(".")[0] == "app"
        assert callable(getattr(importlib.import_module(module), function)), scripts[script]


def test_dockerfile_final_stage_is_slim():
    stages = _stages()
    final_text = "\n".join(f"{k} {r}" for k, r in stages[-1])
    assert "pip install" not in final_text, "install in the build stage, copy the environment"
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", final_text)
    copies = [rest for keyword, rest in stages[-1] if keyword == "COPY"]
    assert copies and all(rest.startswith("--from=") for rest in copies), "the final stage copies from the build"
    sources = {shlex.split(rest)[1] for rest in copies}
    assert not any("tests" in source for source in sources)
    # The package and its migrations (package data) come inside the environment.
    assert sources == {"/opt/venv"}, sources


def test_dockerfile_installs_the_runtime_lock_like_bootstrap_installs_the_dev_lock():
    build_text = "\n".join(f"{k} {r}" for k, r in _stages()[0])
    assert re.search(r"-m venv (--without-pip )?/opt/venv", build_text)
    installs = re.findall(r"pip --python /opt/venv/bin/python install ([^&\n]*)", build_text)
    # The dependencies: the runtime lock, hashes checked, with the options scripts/bootstrap
    # (which CI runs) uses for the dev lock.
    lock_installs = [i.split() for i in installs if "-r" in i.split()]
    assert [i[i.index("-r") + 1] for i in lock_installs] == ["requirements/runtime.txt"], installs
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    bootstrap_install = re.search(r"pip install ([^\n]*)-r \"\$LOCK\"", bootstrap)
    assert bootstrap_install, "scripts/bootstrap no longer installs the lock with pip: update the Dockerfile"
    assert lock_installs[0][: lock_installs[0].index("-r")] == bootstrap_install.group(1).split()
    assert re.search(r"^LOCK=requirements/dev\.txt$", bootstrap, flags=re.MULTILINE)
    # The project itself: a built wheel, no extras, not editable, nothing resolved again.
    project = installs[-1].split()
    assert "--no-deps" in project, project
    assert "-e" not in project, project
    assert project[-1].endswith(".whl"), project
    runtime, dev = (
        dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^\s;\\]+)", (ROOT / "requirements" / name).read_text(), re.M))
        for name in ("runtime.txt", "dev.txt")
    )
    assert runtime, "requirements/runtime.txt pins nothing"
    assert {name: dev.get(name) for name in runtime} == runtime, "runtime.txt and dev.txt disagree"
    for keyword, rest in _stages()[0]:
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _docker_ignored(source), f"COPY {source}: excluded by .dockerignore"


def _docker_ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern (on the path or a parent) wins."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((re.compile(regex + r"\Z"), negated))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for regex, negated in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    needed = (
        "pyproject.toml",
        "README.md",
        "requirements/runtime.txt",
        "requirements/build.txt",
        "app/__init__.py",
        "app/config.py",
        "app/persistence/migrations/versions/x.py",
        "app/http/static/asyncapi/index.js",
    )
    for path in needed:
        assert not _docker_ignored(path), path
    unwanted = (
        ".venv/bin/python",
        "tests/integration/test_deploy.py",
        ".git/HEAD",
        "app/__pycache__/config.cpython-311.pyc",
        "kustomize/base/kustomization.yaml",
        ".pytest_cache/v/x",
        ".ci/run",
        ".env",
        "requirements/dev.txt",
    )
    for path in unwanted:
        assert _docker_ignored(path), path
