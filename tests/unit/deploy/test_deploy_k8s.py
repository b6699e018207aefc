"""deploy/k8s: every manifest validates offline against the Kubernetes schema (strict)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mammosearch import config

ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = ROOT / "deploy" / "k8s"
# The oldest Kubernetes release the manifests must work on.
KUBERNETES_VERSION = "1.30.0"
MANIFEST_PATHS = sorted(
    path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml"
)


def _documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _workload(name: str) -> dict:
    """The Deployment called `name`, from whichever manifest holds it."""
    for path in MANIFEST_PATHS:
        for document in _documents(path):
            if document["kind"] == "Deployment" and document["metadata"]["name"] == name:
                return document
    raise LookupError(f"no Deployment named {name} under {K8S_DIR}")


def _kustomization() -> dict:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def _merge_containers(base: list[dict], patch: list[dict]) -> list[dict]:
    merged = copy.deepcopy(base)
    for patch_container in patch:
        target = next(item for item in merged if item["name"] == patch_container["name"])
        _strategic_merge(target, patch_container)
    return merged


def _strategic_merge(target: dict, patch: dict) -> dict:
    """The part of kubectl's strategic merge the GPU patch uses: maps merge, containers by name."""
    for key, value in patch.items():
        if key == "containers":
            target[key] = _merge_containers(target[key], value)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


@pytest.mark.parametrize(
    ("path", "index"),
    [(path, index) for path in MANIFEST_PATHS for index in range(len(_documents(path)))],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_manifest_matches_the_kubernetes_schema(path: Path, index: int) -> None:
    """Strict validation: unknown fields (typos) fail, not only wrong types."""
    document = _documents(path)[index]
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_names_only_files_that_exist() -> None:
    """Every resource, optional (commented) resource and patch path is a real file."""
    text = (K8S_DIR / "kustomization.yaml").read_text()
    named = set(_kustomization()["resources"])
    named |= set(re.findall(r"#\s*-\s*(?:path:\s*)?([\w/.-]+\.yaml)", text))
    missing = sorted(name for name in named if not (K8S_DIR / name).is_file())
    assert not missing, f"kustomization.yaml names missing files: {missing}"
    unlisted = {path.name for path in MANIFEST_PATHS} - named - {"secret.example.yaml"}
    assert not unlisted, f"manifests not mentioned in kustomization.yaml: {sorted(unlisted)}"


def test_the_secret_example_is_not_applied_by_kustomize() -> None:
    """Placeholder credentials must never reach a cluster by `kubectl apply -k`."""
    assert "secret.example.yaml" not in _kustomization()["resources"]


def test_gpu_patch_applied_to_the_embed_worker_is_still_valid() -> None:
    """The GPU variant asks for nvidia.com/gpu and stays a valid Deployment."""
    patch = _documents(K8S_DIR / "patches" / "embed-worker-gpu.yaml")[0]
    worker = _workload(patch["metadata"]["name"])
    patched = _strategic_merge(copy.deepcopy(worker), patch)
    kubernetes_validate.validate(patched, KUBERNETES_VERSION, strict=True)
    container = patched["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"] == worker["spec"]["template"]["spec"]["containers"][0]["command"]


def test_web_probes_use_the_health_endpoints() -> None:
    """Liveness on /healthz (process up), readiness on /readyz (db, broker, index)."""
    container = _workload("mammosearch-web")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("name", ["mammosearch-index-writer", "mammosearch-beat"])
def test_singletons_have_one_replica_and_recreate(name: str) -> None:
    """A rolling update would briefly run two index writers (or two beats)."""
    spec = _workload(name)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"


def test_the_index_writer_handles_one_task_at_a_time() -> None:
    container = _workload("mammosearch-index-writer")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--concurrency", "1"]


def test_the_data_volume_is_shared_read_write_many() -> None:
    """Web replicas on any node read the segments the index writer commits."""
    claim = _documents(K8S_DIR / "pvc.yaml")[0]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    "name",
    [
        "mammosearch-web",
        "mammosearch-embed-worker",
        "mammosearch-index-writer",
        "mammosearch-evaluate-worker",
        "mammosearch-train-worker",
        "mammosearch-beat",
        "mammosearch-dicom-listener",
    ],
)
def test_pods_run_as_non_root_on_the_shared_data_volume(name: str) -> None:
    """Non-root, no privilege escalation, read-only root, data dir on the shared claim."""
    pod = _workload(name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod["volumes"]
        if "persistentVolumeClaim" in volume
    }
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert claims[mounts["/var/lib/mammosearch"]] == "mammosearch-data"


def test_configmap_and_secret_together_set_every_setting() -> None:
    """Each setting is configured in exactly one place: ConfigMap or Secret."""
    config_keys = set(_documents(K8S_DIR / "configmap.yaml")[0]["data"])
    secret_keys = set(_documents(K8S_DIR / "secret.example.yaml")[0]["stringData"])
    assert not config_keys & secret_keys, "set in both ConfigMap and Secret"
    setting_variables = set(config.ENVIRONMENT_VARIABLES.values())
    missing = sorted(setting_variables - config_keys - secret_keys)
    assert not missing, f"neither ConfigMap nor Secret sets: {missing}"
