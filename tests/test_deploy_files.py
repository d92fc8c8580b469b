"""The files that run teams-bridge elsewhere: the Kubernetes manifests validated offline against
the Kubernetes schemas (kubernetes-validate), the pipelines parsed and checked for what they
promise, the Dockerfile's essentials."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_a_broken_manifest_is_caught() -> None:
    doc = documents(ROOT / "deploy" / "kubernetes" / "cronjob.yaml")[0]
    doc["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def _kind(kind: str) -> dict:
    return next(d for p in MANIFESTS for d in documents(p) if d["kind"] == kind)


def test_the_deployment_probes_scrape_annotations_and_workload_identity() -> None:
    dep = _kind("Deployment")
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert container["args"][0] == "serve"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"


def test_the_cronjob_never_runs_twice_at_once() -> None:
    job = _kind("CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] in ("drift", "apply")


def test_github_actions_plans_on_pull_requests_and_applies_on_main() -> None:
    wf = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
    assert wf["permissions"]["id-token"] == "write"
    plan = "\n".join(s.get("run", "") for s in wf["jobs"]["plan"]["steps"])
    assert "teams-bridge validate" in plan and "teams-bridge plan" in plan
    assert "GITHUB_STEP_SUMMARY" in plan and "--format md" in plan
    assert "pull_request" in wf["jobs"]["plan"]["if"]
    apply = "\n".join(s.get("run", "") for s in wf["jobs"]["apply"]["steps"])
    assert "teams-bridge apply" in apply and "--auto-approve" in apply
    assert "refs/heads/main" in wf["jobs"]["apply"]["if"]
    assert not re.search(r"(?i)secret", yaml.safe_dump(wf["env"]))  # OIDC: no secret


def test_azure_pipelines_plans_on_pull_requests_and_applies_on_main() -> None:
    wf = yaml.safe_load((ROOT / "examples" / "ci" / "azure-pipelines.yml").read_text())
    plan, apply = wf["stages"]
    assert "PullRequest" in plan["condition"]
    assert "refs/heads/main" in apply["condition"]
    text = (ROOT / "examples" / "ci" / "azure-pipelines.yml").read_text()
    assert "SYSTEM_ACCESSTOKEN: $(System.AccessToken)" in text
    assert "task.uploadsummary" in text and "teams-bridge apply" in text


def test_dockerfile_runs_the_wheel_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip wheel" in text and "pip install --no-cache-dir /wheels/*.whl" in text
    assert re.search(r"^USER 10001$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["teams-bridge"]' in text
