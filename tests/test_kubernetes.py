"""deploy/kubernetes/ checked offline: every manifest parses, the core kinds validate against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), the InferenceService's fields, and cross-checks against the code:
settings, routes, gRPC health names, ports, the Dockerfile and the CPU budget."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import ValidationError as K8sValidationError
from kubernetes_validate import validate as k8s_validate
from pydantic import ValidationError

from model_store.cpu import CpuBudget
from service.app import create_app
from service.config import Settings
from service.grpc_servicer import SERVICE_NAME
from tests.test_dockerfile import DOCKERFILE, parse_dockerfile

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
# The Kubernetes release whose schemas the manifests must satisfy (bundled in kubernetes-validate 1.37.0).
K8S_VERSION = "1.37"
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "PersistentVolumeClaim"}
# Memory allowances behind the limits check: one serving worker reached 453 MiB after 2000 batch sizes with the
# default oneDNN cache (docs/benchmarks.md), and a process that has imported torch is about 260 MiB
# (docs/training.md): the job-runner process that --workers N > 1 starts beside the workers.
WORKER_MIB = 512
JOB_RUNNER_MIB = 512

Manifest = dict[str, Any]


def _documents() -> dict[Path, list[Manifest]]:
    found: dict[Path, list[Manifest]] = {}
    for path in sorted(KUBE.rglob("*.y*ml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        found[path] = docs
    return found


DOCUMENTS = _documents()
MANIFESTS = [(path, doc) for path, docs in DOCUMENTS.items() for doc in docs if doc["kind"] != "Kustomization"]


def _one(kind: str) -> Manifest:
    matching = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind} in deploy/kubernetes, found {len(matching)}"
    return matching[0]


def _container(pod_spec: Manifest) -> Manifest:
    containers = pod_spec["containers"]
    assert len(containers) == 1, "one container: lstm-serve"
    container: Manifest = containers[0]
    return container


def _pod_spec_of_predictor(isvc: Manifest) -> Manifest:
    """The predictor as a core PodSpec: KServe's PredictorSpec is a PodSpec plus these component fields."""
    kserve_only = {
        "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
        "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
        "deploymentStrategy", "model", "workerSpec",
    }  # fmt: skip
    return {key: value for key, value in isvc["spec"]["predictor"].items() if key not in kserve_only}


def _workloads() -> list[tuple[str, Manifest]]:
    """(name, PodSpec) of everything that runs lstm-serve: the Deployment and the InferenceService's predictor."""
    return [
        ("Deployment", _one("Deployment")["spec"]["template"]["spec"]),
        ("InferenceService", _pod_spec_of_predictor(_one("InferenceService"))),
    ]


def _settings_from(config: Manifest) -> Settings:
    """The Settings the pod gets from the ConfigMap alone (env names -> field names), validated as lstm-serve does."""
    fields = {name.removeprefix("LSTM_").lower(): value for name, value in config["data"].items()}
    return Settings.model_validate(fields)


def _cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1500m") in cores."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _mib(quantity: str) -> float:
    """A Kubernetes memory quantity (Mi, Gi or bytes) in MiB."""
    match = re.fullmatch(r"(\d+)(Mi|Gi)?", quantity)
    assert match, f"memory quantity {quantity!r}: use Mi, Gi or bytes"
    number, unit = int(match.group(1)), match.group(2)
    return number * 1024 if unit == "Gi" else number if unit == "Mi" else number / 2**20


def _port(container: Manifest, ref: int | str) -> int:
    """A probe's port (a number or a container port's name) as a number."""
    if isinstance(ref, int):
        return ref
    named = {port["name"]: port["containerPort"] for port in container["ports"] if "name" in port}
    assert ref in named, f"probe port {ref!r} names no container port ({sorted(named)})"
    return int(named[ref])


def _route_paths() -> set[str]:
    """The paths the app answers GET on (probes are GETs), from its OpenAPI document: the public route list."""
    paths: dict[str, dict[str, Any]] = create_app(Settings(store_dir=Path("unused"))).openapi()["paths"]
    return {path for path, methods in paths.items() if "get" in methods}


def test_every_manifest_parses_and_names_its_kind() -> None:
    assert MANIFESTS, "deploy/kubernetes holds no manifest"
    for path, doc in MANIFESTS:
        assert isinstance(doc, dict), path
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
        assert doc["metadata"]["name"], path
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert kinds == CORE_KINDS | {"InferenceService"}, kinds


@pytest.mark.parametrize(
    "path, doc",
    [(path, doc) for path, doc in MANIFESTS if doc["kind"] in CORE_KINDS],
    ids=lambda value: value.name if isinstance(value, Path) else value["kind"],
)
def test_core_kinds_validate_against_the_kubernetes_schemas(path: Path, doc: Manifest) -> None:
    try:
        k8s_validate(doc, K8S_VERSION, strict=True)
    except K8sValidationError as exc:
        pytest.fail(f"{path.relative_to(ROOT)}: {exc.message} at {'/'.join(map(str, exc.path))}")


def test_the_validator_refuses_a_broken_manifest() -> None:
    # The check above is only worth something if the bundled schemas are there and strict: an unknown field and a
    # wrong type must fail, offline.
    broken = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/v2/health/live"
    with pytest.raises(K8sValidationError):
        k8s_validate(broken, K8S_VERSION, strict=True)
    broken = yaml.safe_load((KUBE / "service.yaml").read_text())
    broken["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(K8sValidationError):
        k8s_validate(broken, K8S_VERSION, strict=True)


def test_the_predictor_is_a_valid_pod_spec() -> None:
    # The InferenceService's schema is KServe's CRD, not bundled; its predictor is a PodSpec, validated as one.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}}
    pod["spec"] = _pod_spec_of_predictor(_one("InferenceService"))
    try:
        k8s_validate(pod, K8S_VERSION, strict=True)
    except K8sValidationError as exc:
        pytest.fail(f"InferenceService predictor: {exc.message} at {'/'.join(map(str, exc.path))}")


def test_inference_service_fields() -> None:
    isvc = _one("InferenceService")
    deployment = _one("Deployment")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    # Knative (Serverless mode) allows one port per container; both need RawDeployment.
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert "model" not in predictor, "a custom container, not a KServe runtime"
    assert predictor.get("maxReplicas") == 1, "each pod has its own emptyDir store: one replica until issue 13"
    container = _container(predictor)
    served = _container(deployment["spec"]["template"]["spec"])
    assert container["name"] == "kserve-container"
    assert container["image"] == served["image"], "the same image as the Deployment"
    assert {port["containerPort"] for port in container["ports"]} == {8000, 8001}
    grpc_ports = [port for port in container["ports"] if port["containerPort"] == 8001]
    assert "grpc" in grpc_ports[0]["name"], "KServe marks a port gRPC by its name"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in container, f"InferenceService: {probe}"
    assert container["envFrom"] == served["envFrom"] and container["env"] == served["env"]
    assert container["resources"] == served["resources"]


def test_config_map_names_only_real_settings_with_valid_values() -> None:
    config = _one("ConfigMap")
    known = {f"LSTM_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(set(config["data"]) - known)
    assert not unknown, f"ConfigMap keys that are no setting of service/config.py: {unknown}"
    assert all(isinstance(value, str) for value in config["data"].values()), "ConfigMap values must be strings"
    settings = _settings_from(config)  # raises on a value lstm-serve would refuse
    assert settings.host == "0.0.0.0", "the pod must listen beyond its loopback"
    # The image's store path, where the volumes are mounted.
    for name, pod in _workloads():
        mounts = {mount["mountPath"] for mount in _container(pod)["volumeMounts"]}
        assert str(settings.store_dir) in mounts, f"{name}: the store volume is mounted at LSTM_STORE_DIR"


def test_config_map_check_can_fail() -> None:
    with pytest.raises(ValidationError):
        _settings_from({"data": {"LSTM_PORT": "eighty"}})
    assert "LSTM_NO_SUCH_SETTING" not in {f"LSTM_{name.upper()}" for name in Settings.model_fields}


def test_the_secret_holds_the_token_and_ships_empty() -> None:
    secret = _one("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(values) == {"LSTM_API_TOKEN"}
    # A committed token would be everyone's; empty makes lstm-serve refuse to start until one is set.
    assert values["LSTM_API_TOKEN"] == ""
    with pytest.raises(ValidationError):
        Settings.model_validate({"api_token": ""})
    assert "LSTM_API_TOKEN" not in _one("ConfigMap")["data"], "the token belongs in the Secret"
    for name, pod in _workloads():
        env = {item["name"]: item for item in _container(pod).get("env", [])}
        ref = env["LSTM_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "LSTM_API_TOKEN"), name
        sources = [item["configMapRef"]["name"] for item in _container(pod)["envFrom"]]
        assert sources == [_one("ConfigMap")["metadata"]["name"]], name


def test_ports_match_settings_the_dockerfile_and_the_service() -> None:
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    settings = _settings_from(_one("ConfigMap"))
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    exposed = {int(word.split("/")[0]) for args in stages[-1].all("EXPOSE") for word in args.split()}
    assert (defaults["port"], defaults["grpc_port"]) == (settings.port, settings.grpc_port) == (8000, 8001)
    assert exposed == {settings.port, settings.grpc_port}, f"Dockerfile EXPOSE {exposed}"
    assert settings.grpc, "the gRPC port and probe need LSTM_GRPC"
    for name, pod in _workloads():
        ports = {port["containerPort"] for port in _container(pod)["ports"]}
        assert ports == exposed, f"{name}: container ports {ports}"
    deployment = _one("Deployment")
    service = _one("Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    container = _container(deployment["spec"]["template"]["spec"])
    targets = {_port(container, port["targetPort"]) for port in service["spec"]["ports"]}
    assert targets == exposed, f"Service targets {targets}"


def test_probes_use_real_routes_and_grpc_health_names() -> None:
    routes = _route_paths()
    assert "/v2/health/live" in routes and "/v2/health/ready" in routes, "the app's OIP health routes"
    settings = _settings_from(_one("ConfigMap"))
    for name, pod in _workloads():
        container = _container(pod)
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", name
        grpc_probes = 0
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] in routes, f"{name} {kind}: {probe['httpGet']['path']} is no route"
                assert _port(container, probe["httpGet"]["port"]) == settings.port, f"{name} {kind}"
            if "grpc" in probe:
                grpc_probes += 1
                assert probe["grpc"]["port"] == settings.grpc_port, f"{name} {kind}"
                # What grpc.health.v1 answers in service/grpc_server.py: "" (process up) and the inference service.
                assert probe["grpc"].get("service", "") in {"", SERVICE_NAME}, f"{name} {kind}"
        assert grpc_probes >= 1, f"{name}: a grpc.health.v1 probe"
    assert "/no/such/route" not in routes


def test_resources_follow_the_cpu_budget() -> None:
    settings = _settings_from(_one("ConfigMap"))
    assert settings.workers == "auto", "the workers follow limits.cpu"
    for name, pod in _workloads():
        resources = _container(pod)["resources"]
        assert resources["requests"] == resources["limits"], f"{name}: Guaranteed QoS, the budget is the limit"
        limit = _cores(resources["limits"]["cpu"])
        assert limit == math.floor(limit) >= 1, f"{name}: a whole-core CPU limit (auto floors a fraction)"
        # What --workers auto starts under this limit as its cgroup quota (model_store/cpu.py).
        workers = CpuBudget(cores=limit, affinity=64, quota=limit, source="cpu.max").threads
        assert workers * settings.torch_threads <= limit, f"{name}: workers x torch threads within the limit"
        job_runner = JOB_RUNNER_MIB if workers > 1 else 0  # --workers 1 runs jobs in the worker itself
        needed = workers * WORKER_MIB + job_runner + settings.job_concurrency * settings.job_memory_limit
        assert settings.job_memory_limit > 0, "training processes get an RLIMIT_DATA"
        memory = _mib(resources["limits"]["memory"])
        assert memory >= needed, f"{name}: limits.memory {memory:g} MiB < {needed} MiB the pod can use"


def test_drain_fits_the_grace_period() -> None:
    settings = _settings_from(_one("ConfigMap"))
    for name, pod in _workloads():
        assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout, name


def test_security_context_matches_the_image_user() -> None:
    for name, pod in _workloads():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == 10001 and context["fsGroup"] == 10001, name
        assert _container(pod)["securityContext"]["readOnlyRootFilesystem"], name
    assert "USER 10001:10001" in DOCKERFILE.read_text()


def test_kustomizations_list_every_manifest_once() -> None:
    listed: list[Path] = []
    for path, docs in DOCUMENTS.items():
        for doc in docs:
            if doc["kind"] != "Kustomization":
                continue
            for resource in doc["resources"]:
                target = (path.parent / resource).resolve()
                assert target.exists(), f"{path.relative_to(ROOT)}: {resource} does not exist"
                if target.is_file():
                    listed.append(target)
                else:
                    assert (target / "kustomization.yaml").is_file(), f"{resource}: a folder needs a kustomization"
    manifests = {path.resolve() for path, _ in MANIFESTS}
    assert sorted(listed) == sorted(manifests), "each manifest in exactly one kustomization"
    top = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert "kserve" not in top["resources"], "the InferenceService needs KServe's CRDs: a kustomization of its own"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (its kustomize renders offline)")
@pytest.mark.parametrize("folder", [KUBE, KUBE / "kserve"], ids=["deployment", "kserve"])
def test_kubectl_kustomize_renders_the_objects(folder: Path) -> None:
    # What `kubectl apply -k` would send, built offline; the names must stay as the manifests reference them.
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(rendered.stdout) if doc}
    config = {("ConfigMap", "lstm-serve"), ("Secret", "lstm-api-token")}
    if folder == KUBE:
        expected = config | {("PersistentVolumeClaim", "lstm-model-store"), ("Deployment", "lstm-serve")}
        expected |= {("Service", "lstm-serve")}
    else:
        expected = config | {("InferenceService", "lstm")}
    assert objects == expected
