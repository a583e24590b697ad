"""infra/kubernetes renders (kubectl's kustomize, offline) into resources Kubernetes and KubeRay
accept: core objects against Kubernetes' own schemas (kubernetes-validate, strict), the
RayCluster against KubeRay's CRD schema with unknown fields refused, and its pod templates as
Kubernetes pod templates. No cluster runs here, so nothing is applied: what an API server or the
KubeRay operator would still refuse at apply time (admission, quotas) is not covered."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

INFRA = Path(__file__).parent.parent / "infra" / "kubernetes"
KUBERNETES = "1.32.0"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (it renders the kustomization)")
    work = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(INFRA, work)
    shutil.copyfile(work / "kiln.env.example", work / "kiln.env")  # as the README says
    done = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _unknown(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Fields the schema does not name (the API server would drop them without a word)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += _unknown(item, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += _unknown(item, schema["items"], f"{where}[{index}]")
    return found


def test_core_objects_are_valid_kubernetes(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted([
        "Namespace", "Secret", "Service", "Service", "Service", "Service", "StatefulSet",
        "Deployment", "Deployment", "PersistentVolumeClaim", "PersistentVolumeClaim", "RayCluster",
    ])  # fmt: skip
    for doc in rendered:
        if doc["kind"] != "RayCluster":
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"].get("namespace") == "kiln"


def test_the_ray_cluster_is_valid_kuberay_and_its_pods_valid_kubernetes(
    rendered: list[dict[str, Any]],
) -> None:
    import jsonschema
    import kubernetes_validate

    cluster = next(d for d in rendered if d["kind"] == "RayCluster")
    schema = json.loads((INFRA / "schemas" / "raycluster.ray.io-v1.json").read_text())
    jsonschema.validate(cluster, schema)
    assert _unknown(cluster, schema, "RayCluster") == []
    spec = cluster["spec"]
    groups = [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec["workerGroupSpecs"]
    ]
    for name, group in groups:
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
                    "template": group["template"]}  # fmt: skip
        kubernetes_validate.validate(template, KUBERNETES, strict=True)
    # What Kiln relies on: token auth, dynos off the head, GPU workers from zero by autoscaling.
    assert spec["authOptions"] == {"mode": "token", "secretName": "kiln-secrets"}
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_every_secret_a_pod_reads_is_in_the_secret(rendered: list[dict[str, Any]]) -> None:
    secret = next(d for d in rendered if d["kind"] == "Secret")
    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
    wanted = set()
    for doc in rendered:
        for container in _containers(doc):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    wanted.add(ref["key"])
    assert wanted and wanted <= keys, wanted - keys
    assert "auth_token" in keys  # KubeRay's token auth reads this key of authOptions' secret


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return list(doc["spec"]["template"]["spec"]["containers"])
    if doc["kind"] == "RayCluster":
        spec = doc["spec"]
        templates = [spec["headGroupSpec"]["template"]] + [
            g["template"] for g in spec["workerGroupSpecs"]
        ]
        return [c for t in templates for c in t["spec"]["containers"]]
    return []
