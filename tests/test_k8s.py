"""The Kubernetes manifests (docker/k8s) are valid for Kubernetes' own schemas, strictly (an
unknown field is an error), and agree with each other and with the policy they are run with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.policy.loader import parse_policy
from tests.conftest import REPO

K8S = REPO / "docker" / "k8s"
# The oldest release a managed Kubernetes still offers at the time of writing, and the newest.
VERSIONS = ["1.33.0", "1.37.0"]


def _manifests() -> dict[str, list[dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return {name: [d for d in yaml.safe_load_all((K8S / name).read_text()) if d] for name in listed}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    for name, docs in _manifests().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_manifests_agree_with_each_other_and_the_policy() -> None:
    docs = [d for found in _manifests().values() for d in found]
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for (kind, name), deployment in by_kind.items():
        if kind != "Deployment":
            continue
        pod = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        service = by_kind[("Service", name)]  # each Deployment has its Service of the same name
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    gateway = by_kind[("Deployment", "tierwise-gateway")]["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    assert (container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    # the policy is a mounted directory (an update reaches the file: the gateway reloads it)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policy")
    assert "subPath" not in mount and container["command"][-1].startswith(mount["mountPath"] + "/")
    hpa = by_kind[("HorizontalPodAutoscaler", "tierwise-gateway")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tierwise-gateway" and hpa["spec"]["minReplicas"] >= 2
    # The README loads policies/compose.yaml into the ConfigMap: its local model is this Service.
    policy = parse_policy((REPO / "policies" / "compose.yaml").read_text())
    local = policy.tier("local").deployments[0]
    service = by_kind[("Service", "local-model")]
    assert local.api_base == f"http://local-model:{service['spec']['ports'][0]['port']}/v1"


def test_the_readme_deploys_these_manifests() -> None:
    readme = (REPO / "README.md").read_text()
    for step in (
        "kubectl create configmap tierwise-policy --from-file=policy.yaml=policies/compose.yaml",
        "kubectl create secret generic tierwise-secrets",
        "kubectl apply -k docker/k8s",
    ):
        assert step in readme, step
    assert Path(K8S / "kustomization.yaml").exists()
