"""The metrics path into the Foodies Prometheus (kustomize/components/foodies-metrics-scrape): built
onto a stand-in of the Foodies collector (tests/fixtures/foodies-collector), the collector's
resulting configuration, as the collector merges its --config files, scrapes the payment pods
of the drop-in overlay into the existing metrics pipeline. Offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.http.probes import probe_routes
from tests.integration.manifests import FIXTURES, KUSTOMIZE, build, container, find, generated, one, validate

COLLECTOR = FIXTURES / "foodies-collector"
FOODIES = KUSTOMIZE / "overlays" / "foodies"
EXPECTED = yaml.safe_load((FIXTURES / "foodies-payment-deployment.yaml").read_text())
RECEIVER = "prometheus/payment"
PROMTOOL = shutil.which("promtool")

# Fields of Prometheus' kubernetes_sd_config (the collector's prometheus receiver embeds Prometheus).
SD_FIELDS = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata", "basic_auth",
             "authorization", "oauth2", "proxy_url", "no_proxy", "proxy_from_environment", "proxy_connect_header",
             "tls_config", "follow_redirects", "enable_http2"}  # fmt: skip
SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return build(COLLECTOR)


def merge(base: Any, layer: Any) -> Any:
    """The collector's merge of two --config files: maps key by key, anything else (a list
    included) replaced by the later file."""
    if isinstance(base, dict) and isinstance(layer, dict):
        merged = dict(base)
        for key, value in layer.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return layer


def config_files(docs: list[dict]) -> list[str]:
    """The text of every --config file of the collector, in argument order, found through the
    container's mounts to the ConfigMaps of the build."""
    deployment = one(docs, "Deployment", "otel-collector")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment, "otel-collector")
    volumes = {v["name"]: v for v in pod["volumes"]}
    maps = {d["metadata"]["name"]: d["data"] for d in find(docs, "ConfigMap")}
    texts = []
    for arg in c["args"]:
        path = arg.removeprefix("--config=")
        for mount in c["volumeMounts"]:
            data = maps[volumes[mount["name"]]["configMap"]["name"]]
            if "subPath" in mount and mount["mountPath"] == path:
                texts.append(data[mount["subPath"]])
                break
            if "subPath" not in mount and path.startswith(mount["mountPath"].rstrip("/") + "/"):
                texts.append(data[path.removeprefix(mount["mountPath"].rstrip("/") + "/")])
                break
        else:
            pytest.fail(f"--config {path} is not a file of a mounted ConfigMap")
    return texts


def resulting_config(docs: list[dict]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for text in config_files(docs):
        merged = merge(merged, yaml.safe_load(text))
    return merged


def scrape_job(docs: list[dict]) -> dict[str, Any]:
    [job] = resulting_config(docs)["receivers"][RECEIVER]["config"]["scrape_configs"]
    return job


# ------------------------------------------------------------------------------ building
def test_merge_follows_the_collector_rules() -> None:
    base = {"a": {"x": [1], "y": 1}, "b": 2}
    assert merge(base, {"a": {"x": [2, 3]}, "c": 4}) == {"a": {"x": [2, 3], "y": 1}, "b": 2, "c": 4}


def test_component_builds_validates_and_keeps_the_platform_file(docs: list[dict]) -> None:
    assert validate(docs, "collector") >= 2 * 5
    platform = generated(docs, "ConfigMap", "otel-collector-config")["data"]["collector-config.yaml"]
    assert platform == (COLLECTOR / "collector-config.yaml").read_text(), "the platform's file is left alone"
    args = container(one(docs, "Deployment", "otel-collector"), "otel-collector")["args"]
    assert args[0] == "--config=/etc/otel-collector-config.yaml", "the platform's file first"
    assert len(args) == 2 and args[1].startswith("--config=")
    texts = config_files(docs)
    assert len(texts) == 2
    layer = texts[1]
    assert "$" not in layer, "the collector expands $ as a variable reference"
    assert isinstance(yaml.safe_load(layer), dict)
    # The layer's ConfigMap is generated (hash-suffixed): a change rolls the collector.
    layer_map = generated(docs, "ConfigMap", "otel-collector-payment-scrape")
    assert re.fullmatch(r"otel-collector-payment-scrape-[a-z0-9]{10}", layer_map["metadata"]["name"])


def test_the_scrape_feeds_the_existing_metrics_pipeline(docs: list[dict]) -> None:
    platform = yaml.safe_load((COLLECTOR / "collector-config.yaml").read_text())
    config = resulting_config(docs)
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics"]["receivers"] == [*platform["service"]["pipelines"]["metrics"]["receivers"], RECEIVER]
    for key in ("processors", "exporters"):
        assert pipelines["metrics"][key] == platform["service"]["pipelines"]["metrics"][key], key
    assert pipelines["traces"] == platform["service"]["pipelines"]["traces"]
    # The exporter the cluster's Prometheus scrapes.
    port = int(config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1])
    assert port == EXPECTED["collector"]["prometheus_exporter_port"]
    for pipeline in pipelines.values():
        for section in ("receivers", "processors", "exporters"):
            for name in pipeline.get(section, []):
                assert name in config[section], f"{section} {name} used but not defined"


def test_scrape_job_discovers_pods_of_its_namespace(docs: list[dict]) -> None:
    job = scrape_job(docs)
    assert job["job_name"] == "payment"
    assert job.get("scheme", "http") == "http"
    served = {route.path for route in probe_routes(None, None)}  # type: ignore[arg-type]  # route table only
    assert job.get("metrics_path", "/metrics") in served
    [sd] = job["kubernetes_sd_configs"]
    assert set(sd) <= SD_FIELDS and sd["role"] in SD_ROLES
    assert sd["role"] == "pod"
    assert sd["namespaces"] == {"own_namespace": True}, "the collector's namespace only (the Role is namespaced)"
    for selector in sd.get("selectors", []):
        assert set(selector) <= {"role", "label", "field"} and selector["role"] == sd["role"]


# --------------------------------------------------------------- which targets it scrapes
def _discovered(pod_name: str, labels: dict[str, str], ports: list[dict], namespace: str) -> list[dict[str, str]]:
    """The targets Prometheus' pod discovery makes of one pod: one per container port."""
    base = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in labels.items()}
    base |= {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod_name,
             "__meta_kubernetes_pod_phase": "Running"}  # fmt: skip
    return [
        base | {"__address__": f"10.1.2.3:{p['containerPort']}", "__meta_kubernetes_pod_container_port_name":
                p.get("name", ""), "__meta_kubernetes_pod_container_port_number": str(p["containerPort"])}
        for p in ports
    ]  # fmt: skip


def _relabel(target: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus relabelling for the actions this job uses (keep, drop, plain replace)."""
    for rule in rules:
        assert set(rule) <= {"source_labels", "regex", "action", "target_label"}, f"unsimulated rule {rule}"
        value = ";".join(target.get(label, "") for label in rule.get("source_labels", []))
        matched = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if (action == "keep" and not matched) or (action == "drop" and matched):
            return None
        if action == "replace" and matched:
            target = target | {rule["target_label"]: matched.group(1) if matched.groups() else value}
        assert action in ("keep", "drop", "replace"), action
    return target


def _selected(labels: dict[str, str], selectors: list[dict]) -> bool:
    wanted = dict(term.split("=", 1) for s in selectors if s.get("label") for term in s["label"].split(","))
    return all(labels.get(k) == v for k, v in wanted.items())


def test_exactly_the_payment_pods_http_port_is_scraped(docs: list[dict]) -> None:
    job = scrape_job(docs)
    [sd] = job["kubernetes_sd_configs"]
    pods = [d for d in build(FOODIES) if d["kind"] in ("Deployment", "StatefulSet")]
    pods += find(docs, "Deployment", "otel-collector")
    scraped = []
    for workload in pods:
        template = workload["spec"]["template"]
        if not _selected(template["metadata"]["labels"], sd.get("selectors", [])):
            continue
        for c in template["spec"]["containers"]:
            for target in _discovered(
                workload["metadata"]["name"], template["metadata"]["labels"], c["ports"], "foodies"
            ):
                kept = _relabel(target, job["relabel_configs"])
                if kept is not None:
                    scraped.append((workload["metadata"]["name"], kept))
    assert [(name, target["__address__"].rsplit(":", 1)[1]) for name, target in scraped] == [
        (EXPECTED["deployment"]["name"], str(EXPECTED["deployment"]["port"]["containerPort"]))
    ]
    [(_, target)] = scraped
    assert target["pod"] == EXPECTED["deployment"]["name"] and target["namespace"] == "foodies"


# --------------------------------------------------------------------- discovery access
def test_the_collector_may_list_and_watch_pods_with_an_account_of_its_own(docs: list[dict]) -> None:
    pod = one(docs, "Deployment", "otel-collector")["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert account != "default"
    assert one(docs, "ServiceAccount", account).get("automountServiceAccountToken", True) is True
    [binding] = [b for b in find(docs, "RoleBinding") if {"kind": "ServiceAccount", "name": account} in
                 [{k: s[k] for k in ("kind", "name")} for s in b["subjects"]]]  # fmt: skip
    assert binding["roleRef"]["kind"] == "Role", "namespaced, not cluster-wide"
    rules = one(docs, "Role", binding["roleRef"]["name"])["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")


# ------------------------------------------------------------------------------ promtool
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


def _promtool_check(tmp_path: Path, scrape_configs: list[dict]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": scrape_configs}))
    return subprocess.run([str(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_scrape_job(docs: list[dict], tmp_path: Path) -> None:
    """Prometheus' own parser on the job (scrape settings and relabelling). Some packaged builds
    lack Kubernetes discovery, so static targets stand in for it; its fields are checked above."""
    job = {k: v for k, v in scrape_job(docs).items() if k != "kubernetes_sd_configs"}
    job["static_configs"] = [{"targets": ["10.1.2.3:8085"]}]
    checked = _promtool_check(tmp_path, [job])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = job | {"relabel_configs": [*job["relabel_configs"], {"action": "kept"}]}
    assert _promtool_check(tmp_path, [broken]).returncode != 0, "promtool must reject an unknown action"
