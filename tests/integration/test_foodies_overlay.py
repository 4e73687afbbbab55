"""The Foodies drop-in (kustomize/overlays/foodies) against what the Foodies cluster expects of its
payment service (tests/fixtures/foodies-payment-deployment.yaml): names, labels, ports, where
every environment variable comes from, probe paths, the database, the network policy, and the
optional messaging-topology component. Offline: `kubectl kustomize` and kubernetes-validate."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings, _parse_db_url
from app.messaging.topology import ORDER_CANCELLED_KEY, STOCK_CONFIRMED_KEY, park_key, replay_key
from tests.integration.manifests import (
    FIXTURES,
    KUSTOMIZE,
    ROOT,
    build,
    build_with,
    container,
    documented_snippet,
    env_sources,
    find,
    generated,
    matches_labels,
    one,
    validate,
)

FOODIES = KUSTOMIZE / "overlays" / "foodies"
EXPECTED = yaml.safe_load((FIXTURES / "foodies-payment-deployment.yaml").read_text())
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
TEST_ONLY = {"PAYMENT_FAULT_INJECT", "DLQ_REPLAY_FAULT"}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return build(FOODIES)


def _deployment(docs: list[dict]) -> dict:
    return one(docs, "Deployment", EXPECTED["deployment"]["name"])


def _container(docs: list[dict]) -> dict:
    return container(_deployment(docs), EXPECTED["deployment"]["container"])


def _config(docs: list[dict]) -> dict[str, str]:
    return generated(docs, "ConfigMap", EXPECTED["config"]["name"])["data"]


def _source(expected: dict[str, str]) -> tuple[str, str, str]:
    kind = "configMap" if "configMap" in expected else "secret"
    return kind, expected[kind], expected["key"]


# ---------------------------------------------------------------------------- the build
def test_builds_validates_and_stays_in_the_foodies_namespace(docs: list[dict]) -> None:
    assert validate(docs, "foodies") >= 2 * 7
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate resources"
    for doc in docs:
        assert doc["metadata"]["namespace"] == EXPECTED["namespace"], doc["metadata"]["name"]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Service", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"]
    )


def test_creates_nothing_the_cluster_already_has(docs: list[dict]) -> None:
    """No Secret, no foodies-config, no broker user, permission or exchange."""
    assert not find(docs, "Secret")
    assert not [d for d in docs if d["apiVersion"].startswith("rabbitmq.com/")]
    for name in EXPECTED["external"]["configMaps"]:
        assert not [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith(name)]


# ---------------------------------------------------------------- names, labels, ports
def test_deployment_keeps_the_foodies_name_selector_and_port(docs: list[dict]) -> None:
    expected = EXPECTED["deployment"]
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == expected["replicas"]
    # The selector exactly, not a superset: it cannot change on the running Deployment.
    assert deployment["spec"]["selector"] == {"matchLabels": expected["selector"]}
    assert matches_labels(expected["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    ports = _container(docs)["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [tuple(expected["port"].values())]


def test_service_keeps_the_foodies_name_selector_and_port(docs: list[dict]) -> None:
    expected = EXPECTED["service"]
    service = one(docs, "Service", expected["name"])
    assert service["spec"]["selector"] == expected["selector"]
    assert matches_labels(service["spec"]["selector"], _deployment(docs)["spec"]["template"]["metadata"]["labels"])
    named = {p["name"]: p["containerPort"] for p in _container(docs)["ports"]}
    found = [(p["name"], p["port"], named.get(p["targetPort"], p["targetPort"])) for p in service["spec"]["ports"]]
    assert found == [(p["name"], p["port"], p["targetPort"]) for p in expected["ports"]]


def test_probe_paths_are_the_foodies_ones_on_the_http_port(docs: list[dict]) -> None:
    c = _container(docs)
    for kind, path in EXPECTED["deployment"]["probes"].items():
        probe = c[kind]["httpGet"]
        assert probe["path"] == path, kind
        assert probe["port"] in ("http", EXPECTED["deployment"]["port"]["containerPort"]), kind


# --------------------------------------------------------------------------- environment
def test_every_foodies_variable_comes_from_the_same_place(docs: list[dict]) -> None:
    sources = env_sources(_container(docs))
    config_name = generated(docs, "ConfigMap", EXPECTED["config"]["name"])["metadata"]["name"]
    for variable, expected in EXPECTED["deployment"]["env"].items():
        kind, name, key = _source(expected)
        if kind == "configMap" and name == EXPECTED["config"]["name"]:
            name = config_name  # generated here as in Foodies: the reference carries the hash
        assert sources.get(variable) == (kind, name, key), variable


def test_no_other_environment_source(docs: list[dict]) -> None:
    c = _container(docs)
    assert "envFrom" not in c, "every variable by name, as the Foodies services do"
    sources = env_sources(c)
    assert set(sources) <= SETTING_NAMES, f"variables the app does not read: {set(sources) - SETTING_NAMES}"
    assert not set(sources) & TEST_ONLY
    config = generated(docs, "ConfigMap", EXPECTED["config"]["name"])
    extra_secrets = {}
    for variable, source in sources.items():
        assert source[0] != "value", f"{variable}: set in the ConfigMap, not inline"
        if source[0] == "configMap" and source[1] == config["metadata"]["name"]:
            assert source[2] in config["data"], f"{variable}: no key {source[2]} in {EXPECTED['config']['name']}"
        elif source[0] == "configMap":
            assert source[2] in EXPECTED["external"]["configMaps"].get(source[1], []), variable
        elif source[1] not in EXPECTED["external"]["secrets"]:
            extra_secrets[variable] = source[1:]
    # The one Secret the drop-in adds: the admin routes' token (docs/deployment.md, step 1).
    assert extra_secrets == {"ADMIN_TOKEN": ("payment-service-admin", "token")}
    # Every key of the generated ConfigMap is read by exactly one variable of its own name.
    read = {s[2]: v for v, s in sources.items() if s[0] == "configMap" and s[1] == config["metadata"]["name"]}
    assert read == {key: key for key in config["data"]}


def test_config_has_the_foodies_values_and_only_settings_besides(docs: list[dict]) -> None:
    data = _config(docs)
    for key, value in EXPECTED["config"]["data"].items():
        assert data.get(key) == value, key
    assert set(data) <= SETTING_NAMES
    assert data["RABBITMQ_CANCEL_QUEUE"] == "payment.order-cancelled"


def test_the_app_accepts_the_settings_as_foodies_provides_them(docs: list[dict]) -> None:
    values: dict[str, Any] = {key.lower(): value for key, value in _config(docs).items()}
    for variable, source in env_sources(_container(docs)).items():
        if source[0] == "secret":
            values[variable.lower()] = "from-a-secret"
    values["otel_exporter_otlp_endpoint"] = EXPECTED["external"]["example_otlp_endpoint"]
    settings = Settings(_env_file=None, **values)
    assert settings.database_name == EXPECTED["database"]["statefulset"]["database"]
    assert settings.rabbitmq_host == EXPECTED["rabbitmq"]["cluster"]
    assert settings.otlp_protocol == "grpc", "the endpoint Foodies sets is the collector's gRPC port"


# --------------------------------------------------------------- this service's own pod
def test_pod_has_the_base_hardening_probe_timings_and_shutdown_budget(docs: list[dict]) -> None:
    base = build(KUSTOMIZE / "base")
    base_deployment = one(base, "Deployment", "payment-service")
    base_pod, pod = base_deployment["spec"]["template"]["spec"], _deployment(docs)["spec"]["template"]["spec"]
    base_c, c = container(base_deployment, "payment-service"), _container(docs)
    assert pod["securityContext"] == base_pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"] == base_c["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        timings = lambda probe: {k: v for k, v in probe.items() if k != "httpGet"}  # noqa: E731 - a one-line helper
        assert timings(c[kind]) == timings(base_c[kind]), kind
    assert c["resources"] == base_c["resources"]
    assert c["lifecycle"] == base_c["lifecycle"] and c["volumeMounts"] == base_c["volumeMounts"]
    assert pod["terminationGracePeriodSeconds"] == base_pod["terminationGracePeriodSeconds"]
    base_config = generated(base, "ConfigMap", "payment-service-config")["data"]
    assert _config(docs)["SHUTDOWN_GRACE_SECONDS"] == base_config["SHUTDOWN_GRACE_SECONDS"]


def test_image_is_the_released_one(docs: list[dict]) -> None:
    repository, _, tag = _container(docs)["image"].partition(":")
    prod = container(one(build(KUSTOMIZE / "overlays" / "prod"), "Deployment", "payment-service"), "payment-service")
    assert (repository, tag) == tuple(prod["image"].split(":"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag)


def test_disruption_budget_keeps_one_pod(docs: list[dict]) -> None:
    pdb = one(docs, "PodDisruptionBudget", EXPECTED["deployment"]["name"])["spec"]
    assert pdb["selector"]["matchLabels"] == EXPECTED["deployment"]["selector"]
    assert pdb["maxUnavailable"] == 1 < EXPECTED["deployment"]["replicas"]


# ------------------------------------------------------------------------------ database
def test_database_is_the_foodies_one_unchanged(docs: list[dict]) -> None:
    expected = EXPECTED["database"]
    service = one(docs, "Service", expected["service"]["name"])
    assert service["spec"]["selector"] == expected["service"]["selector"]
    assert service["spec"]["ports"] == expected["service"]["ports"]
    statefulset = one(docs, "StatefulSet", expected["statefulset"]["name"])
    facts, spec = expected["statefulset"], statefulset["spec"]
    # serviceName, selector and the claim template cannot change on a running StatefulSet.
    assert spec["serviceName"] == facts["serviceName"]
    assert spec["replicas"] == facts["replicas"]
    assert spec["selector"] == {"matchLabels": facts["selector"]}
    [claim] = spec["volumeClaimTemplates"]
    assert claim == {
        "metadata": {"name": facts["volume"]["claim"]},
        "spec": {"accessModes": facts["volume"]["accessModes"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    postgres = container(statefulset, facts["container"])
    assert postgres["image"] == facts["image"]
    assert [(p["name"], p["containerPort"]) for p in postgres["ports"]] == [tuple(facts["port"].values())]
    sources = env_sources(postgres)
    assert sources["POSTGRES_DB"] == ("value", facts["database"])
    for variable, source in facts["env"].items():
        assert sources[variable] == _source(source), variable
    assert {(m["name"], m["mountPath"]) for m in postgres["volumeMounts"]} == {("data", facts["volume"]["mountPath"])}
    # DB_URL points at this Service and database.
    host, port, database, _, _ = _parse_db_url(_config(docs)["DB_URL"])
    assert (host, port, database) == (
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
        facts["database"],
    )


# ------------------------------------------------------------------------ network policy
def _pods(docs: list[dict]) -> dict[str, dict[str, str]]:
    workloads = [d for d in docs if "template" in d.get("spec", {})]
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in workloads}


def test_network_policy_lets_in_http_and_out_only_db_rabbitmq_collector_and_dns(docs: list[dict]) -> None:
    policy = one(docs, "NetworkPolicy", EXPECTED["deployment"]["name"])["spec"]
    assert policy["podSelector"] == {"matchLabels": EXPECTED["deployment"]["selector"]}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8085}]}]
    assert all(rule.get("to") for rule in policy["egress"]), "an egress rule without 'to' opens everything"
    db, rabbit, collector, dns = policy["egress"]
    assert db["to"] == [{"podSelector": {"matchLabels": EXPECTED["database"]["statefulset"]["selector"]}}]
    assert matches_labels(db["to"][0]["podSelector"]["matchLabels"], _pods(docs)["payment-postgres"])
    assert db["ports"] == [{"protocol": "TCP", "port": 5432}]
    cluster_pods = {"app.kubernetes.io/name": EXPECTED["rabbitmq"]["cluster"]}
    assert rabbit["to"] == [{"podSelector": {"matchLabels": cluster_pods}}]
    assert rabbit["ports"] == [{"protocol": "TCP", "port": int(_config(docs)["RABBITMQ_PORT"])}]
    facts = EXPECTED["collector"]
    assert collector["to"] == [{"podSelector": {"matchLabels": facts["pod_labels"]}}]
    ports = {(p["protocol"], p["port"]) for p in collector["ports"]}
    assert ports == {("TCP", facts["otlp_grpc_port"]), ("TCP", facts["otlp_http_port"])}
    assert dns["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]


# ---------------------------------------------------------- optional topology component
def test_foodies_queues_component_puts_the_topology_on_the_foodies_cluster(tmp_path: Path) -> None:
    docs = build_with(tmp_path, [FOODIES], [KUSTOMIZE / "components" / "foodies-queues"])
    rabbit = [d for d in docs if d["apiVersion"].startswith("rabbitmq.com/")]
    assert {d["kind"] for d in rabbit} == {"Queue", "Binding"}, "no user, permission or exchange"
    facts = EXPECTED["rabbitmq"]
    for doc in rabbit:
        assert doc["spec"]["rabbitmqClusterReference"] == {"name": facts["cluster"]}
        assert doc["spec"]["vhost"] == facts["vhost"]
    config = _config(build(FOODIES))
    exchange, queues = (
        config["RABBITMQ_PUBLISH_EXCHANGE"],
        (
            config["RABBITMQ_CONSUME_QUEUE"],
            config["RABBITMQ_CANCEL_QUEUE"],
        ),
    )
    assert {q["spec"]["name"] for q in find(rabbit, "Queue")} == {*queues, *(f"{q}.dlq" for q in queues)}
    expected = {(exchange, queues[0], STOCK_CONFIRMED_KEY), (exchange, queues[1], ORDER_CANCELLED_KEY)}
    for queue in queues:
        expected |= {(exchange, queue, replay_key(queue)), (exchange, f"{queue}.dlq", park_key(queue))}
    found = {(b["spec"]["source"], b["spec"]["destination"], b["spec"]["routingKey"]) for b in find(rabbit, "Binding")}
    assert found == expected
    # Everything the service declares, binds, publishes to or locks is inside the Foodies permission.
    permission = re.compile(facts["permission"])
    names = {exchange, *queues, *(f"{q}.dlq" for q in queues), *(f"{q}.dlq.lock" for q in queues)}
    assert all(permission.search(name) for name in names), names


# ------------------------------------------------------------- documented additions
def test_the_documented_http_gateway_additions_build_and_are_read(tmp_path: Path) -> None:
    """docs/deployment.md's kustomization for PAYMENT_GATEWAY=http, built on the overlay."""
    snippet = documented_snippet(ROOT / "docs" / "deployment.md", "kustomize/overlays/foodies")
    (tmp_path / "kustomization.yaml").write_text(snippet.replace("<repo>", os.path.relpath(ROOT, tmp_path)))
    docs = build(tmp_path)
    validate(docs, "foodies + http gateway")
    config = generated(docs, "ConfigMap", EXPECTED["config"]["name"])
    sources = env_sources(_container(docs))
    for variable in ("PAYMENT_GATEWAY", "PAYMENT_GATEWAY_URL"):
        assert sources[variable] == ("configMap", config["metadata"]["name"], variable)
        assert variable in config["data"]
    assert sources["PAYMENT_GATEWAY_API_KEY"][0] == "secret"
    values = {k.lower(): v for k, v in config["data"].items()} | {"payment_gateway_api_key": "from-a-secret"}
    assert Settings(_env_file=None, **values).payment_gateway == "http"
    egress = one(docs, "NetworkPolicy", EXPECTED["deployment"]["name"])["spec"]["egress"]
    assert egress[:4] == one(build(FOODIES), "NetworkPolicy", EXPECTED["deployment"]["name"])["spec"]["egress"]
    assert egress[4]["ports"] == [{"protocol": "TCP", "port": 443}] and egress[4]["to"][0]["ipBlock"]
