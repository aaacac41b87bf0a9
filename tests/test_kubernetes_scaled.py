"""deploy/kubernetes-scaled/ checked offline: the overlay that runs lstm-serve on many nodes against PostgreSQL and S3
with lstm-worker beside it — its manifests validate, its settings are real ones, the serving pods no longer claim a
volume, and the worker's limits hold the training jobs it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import ValidationError as K8sValidationError
from kubernetes_validate import validate as k8s_validate

import model_store
from model_store.locations import open_store
from service.config import Settings
from tests.conftest import save_tiny
from tests.test_kubernetes import JOB_RUNNER_MIB, K8S_VERSION, KUBE, ROOT, WORKER_MIB, _mib

SCALED = ROOT / "deploy" / "kubernetes-scaled"
Manifest = dict[str, Any]
# The standard AWS variables boto3 reads (API.md "Past one machine"): allowed beside the LSTM_ settings.
AWS_KEYS = {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _load(name: str) -> Manifest:
    doc: Manifest = yaml.safe_load((SCALED / name).read_text())
    return doc


def _settings_keys_of(data: dict[str, str]) -> list[str]:
    known = {f"LSTM_{name.upper()}" for name in Settings.model_fields} | AWS_KEYS
    return sorted(set(data) - known)


def _env_sources(container: Manifest) -> list[tuple[str, str]]:
    return [(kind, ref["name"]) for item in container["envFrom"] for kind, ref in item.items()]


def test_every_file_parses_and_the_new_kinds_validate() -> None:
    for path in sorted(SCALED.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"], path
        if doc["kind"] in {"ConfigMap", "Secret"} or path.name == "worker.yaml":  # whole objects, not patches
            try:
                k8s_validate(doc, K8S_VERSION, strict=True)
            except K8sValidationError as exc:
                pytest.fail(f"{path.name}: {exc.message} at {'/'.join(map(str, exc.path))}")


def test_the_kustomization_builds_on_the_single_node_one() -> None:
    kustomization = _load("kustomization.yaml")
    assert (SCALED / kustomization["resources"][0]).resolve() == KUBE
    listed = set(kustomization["resources"][1:]) | {
        patch["path"] for patch in kustomization["patches"] if "path" in patch
    }
    assert listed == {path.name for path in SCALED.glob("*.yaml")} - {"kustomization.yaml"} | {"backends"}
    backends = yaml.safe_load((SCALED / "backends" / "kustomization.yaml").read_text())
    assert set(backends["resources"]) == {"configmap.yaml", "secret.yaml"}
    kserve = yaml.safe_load((SCALED / "kserve" / "kustomization.yaml").read_text())
    assert [(SCALED / "kserve" / path).resolve() for path in kserve["resources"]] == [
        KUBE / "kserve",
        SCALED / "backends",
    ]


def test_backends_name_real_settings_and_an_object_store() -> None:
    backends = _load("backends/configmap.yaml")["data"]
    secret = _load("backends/secret.yaml")["stringData"]
    assert not _settings_keys_of(backends), f"no setting of service/config.py: {_settings_keys_of(backends)}"
    assert not _settings_keys_of(secret), f"no setting of service/config.py: {_settings_keys_of(secret)}"
    assert _settings_keys_of({"LSTM_NO_SUCH_SETTING": ""}) == ["LSTM_NO_SUCH_SETTING"]
    assert backends["LSTM_STORE_DIR"].startswith("s3://"), "one store for every node"
    # The database URL is a credential: in the Secret, shipped empty like the API token.
    assert "LSTM_DATABASE_URL" not in backends
    assert set(secret) == {"LSTM_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value == "" for value in secret.values()), "committed credentials would be everyone's"
    assert backends["LSTM_JOB_RUNNER"] == "false", "jobs run in lstm-worker pods, not the serving ones"
    Settings.model_validate({"job_runner": backends["LSTM_JOB_RUNNER"], "cache_dir": backends["LSTM_CACHE_DIR"]})


def _pods() -> dict[str, Manifest]:
    serve = _load("serve-patch.yaml")["spec"]["template"]["spec"]
    worker = _load("worker.yaml")["spec"]["template"]["spec"]
    return {"lstm-serve": serve, "lstm-worker": worker}


def test_both_pods_read_the_backends_after_the_base_settings_and_mount_the_cache() -> None:
    cache = _load("backends/configmap.yaml")["data"]["LSTM_CACHE_DIR"]
    for name, pod in _pods().items():
        container = pod["containers"][0]
        # Later envFrom sources win: the backends override the base ConfigMap's folder store.
        assert _env_sources(container) == [
            ("configMapRef", "lstm-serve"),
            ("configMapRef", "lstm-backends"),
            ("secretRef", "lstm-backends"),
        ], name
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert cache in mounts, f"{name}: the cache folder is a volume (the root file system is read-only)"
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[cache]], f"{name}: a pod's cache is its own"


def test_the_worker_runs_lstm_worker_from_the_same_image_within_its_limits() -> None:
    base = yaml.safe_load((KUBE / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    worker = _load("worker.yaml")
    pod = worker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["lstm-worker"], "the entrypoint runs a command given as the first argument"
    assert "lstm-worker" in (ROOT / "pyproject.toml").read_text(), "lstm-worker is a console script"
    assert container["image"] == base["containers"][0]["image"]
    assert worker["spec"]["selector"]["matchLabels"] == worker["spec"]["template"]["metadata"]["labels"]
    assert worker["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] != "lstm-serve", (
        "the Service must not send requests to a worker"
    )
    config = yaml.safe_load((KUBE / "config" / "configmap.yaml").read_text())["data"]
    settings = Settings.model_validate({name.removeprefix("LSTM_").lower(): value for name, value in config.items()})
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    needed = JOB_RUNNER_MIB + settings.job_concurrency * settings.job_memory_limit
    assert _mib(resources["limits"]["memory"]) >= needed
    assert pod["securityContext"]["runAsUser"] == 10001 and container["securityContext"]["readOnlyRootFilesystem"]
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout


def test_serving_pods_hold_only_their_workers() -> None:
    # Without jobs (LSTM_JOB_RUNNER=false) a serving pod is its workers alone.
    serve = _pods()["lstm-serve"]["containers"][0]
    memory = _mib(serve["resources"]["limits"]["memory"])
    cores = int(serve["resources"]["limits"]["cpu"])
    assert memory >= cores * WORKER_MIB


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (its kustomize renders offline)")
def test_kubectl_kustomize_renders_two_replicas_a_worker_and_no_volume_claim() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(SCALED)], capture_output=True, text=True, timeout=120, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert set(objects) == {
        ("ConfigMap", "lstm-serve"),
        ("ConfigMap", "lstm-backends"),
        ("Secret", "lstm-api-token"),
        ("Secret", "lstm-backends"),
        ("Deployment", "lstm-serve"),
        ("Deployment", "lstm-worker"),
        ("Service", "lstm-serve"),
    }
    for (kind, name), doc in objects.items():
        try:
            k8s_validate(doc, K8S_VERSION, strict=True)
        except K8sValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {'/'.join(map(str, exc.path))}")
    serve = objects[("Deployment", "lstm-serve")]
    assert serve["spec"]["replicas"] == 2
    assert serve["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = serve["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert all("persistentVolumeClaim" not in volume for volume in volumes.values()), volumes
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "the base's probes are kept"
    assert container["env"][0]["name"] == "LSTM_API_TOKEN", "the base's token is kept"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (its kustomize renders offline)")
def test_the_scaled_inference_service_serves_the_shared_store_from_several_pods() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(SCALED / "kserve")], capture_output=True, text=True, timeout=120, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert set(objects) == {
        ("ConfigMap", "lstm-serve"),
        ("ConfigMap", "lstm-backends"),
        ("Secret", "lstm-api-token"),
        ("Secret", "lstm-backends"),
        ("InferenceService", "lstm"),
    }
    predictor = objects[("InferenceService", "lstm")]["spec"]["predictor"]
    assert predictor["minReplicas"] >= 2 and predictor["maxReplicas"] >= predictor["minReplicas"]
    container = predictor["containers"][0]
    assert _env_sources(container) == [
        ("configMapRef", "lstm-serve"),
        ("configMapRef", "lstm-backends"),
        ("secretRef", "lstm-backends"),
    ]
    cache = _load("backends/configmap.yaml")["data"]["LSTM_CACHE_DIR"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in predictor["volumes"]}
    assert "emptyDir" in volumes[mounts[cache]]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}}
    pod["spec"] = {key: value for key, value in predictor.items() if key not in {"minReplicas", "maxReplicas"}}
    k8s_validate(pod, K8S_VERSION, strict=True)


COMPOSE = ROOT / "compose.scale.yaml"
LSTM_SERVICES = ("seed", "serve-1", "serve-2", "worker")


def _compose() -> Manifest:
    doc: Manifest = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_compose_scale_runs_two_serving_replicas_and_a_worker_on_one_shared_store() -> None:
    services = _compose()["services"]
    assert {"postgres", "minio", "bucket", *LSTM_SERVICES} <= set(services)
    for name in LSTM_SERVICES:
        environment = services[name]["environment"]
        assert _settings_keys_of(environment) == [], name
        assert str(environment["LSTM_STORE_DIR"]).startswith("s3://lstm-models/")
        assert str(environment["LSTM_DATABASE_URL"]).startswith("postgresql://") and "@postgres:5432/" in str(
            environment["LSTM_DATABASE_URL"]
        )
        assert Settings.model_validate({"store_dir": environment["LSTM_STORE_DIR"], "database_url": "postgresql://x/y"})
    for name in ("serve-1", "serve-2"):
        assert services[name]["environment"]["LSTM_JOB_RUNNER"] == "false"  # the worker runs the jobs
        assert services[name]["depends_on"]["seed"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"] == ["lstm-worker"]
    ports = [port.split(":")[-1] for name in ("serve-1", "serve-2") for port in services[name]["ports"]]
    assert sorted(ports) == ["8000", "8000", "8001", "8001"]


@pytest.mark.slow
def test_the_compose_seed_step_publishes_the_default_model_once_into_an_empty_shared_store(
    database_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    """The seed service's own command, run for real against PostgreSQL and S3: it imports while the store is
    empty, and a second run (a `compose up` again) leaves the store as it is."""
    baked = model_store.ModelStore(tmp_path / "default-store")
    save_tiny(baked)
    command = _compose()["services"]["seed"]["command"][0].replace("/opt/lstm/default-store", str(baked.root))
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LSTM_")}
    environment |= {
        "LSTM_STORE_DIR": s3_bucket,
        "LSTM_DATABASE_URL": database_url,
        "LSTM_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": f"{Path(sys.executable).parent}:{environment['PATH']}",
    }

    def seed() -> str:
        done = subprocess.run(
            ["sh", "-c", command], env=environment, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    seed()
    shared = open_store(s3_bucket, database_url, tmp_path / "check-cache")
    try:
        assert shared.versions("lstm") == [1] and shared.aliases("lstm")["production"] == 1
        assert "the store has a model" in seed()
        assert shared.versions("lstm") == [1]
    finally:
        shared.close()
