"""deploy/kubernetes/fleet/: validated offline against the Kubernetes schemas, and checked for
what the fleet relies on: the shard count equals the replicas (completions), each pod finds its
shard from what Kubernetes gives it, and together the pods cover every tenant exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bridge.fleet import default_shard, parse_fleet

ROOT = Path(__file__).resolve().parents[1]
FLEET_DIR = ROOT / "deploy" / "kubernetes" / "fleet"
MANIFESTS = sorted(FLEET_DIR.glob("*.yaml"))


def _docs() -> list[dict]:
    return [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text("utf-8")) if d]


def _kind(kind: str) -> dict:
    return next(d for d in _docs() if d["kind"] == kind)


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_fleet_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text("utf-8")):
        if doc:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_a_broken_fleet_manifest_is_caught() -> None:
    job = _kind("Job")
    job["spec"]["completionMode"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30.0", strict=True)


def test_the_fleet_file_in_the_config_map_is_valid_and_holds_no_secret() -> None:
    data = _kind("ConfigMap")["data"]
    fleet = parse_fleet(data["fleet.yaml"])
    assert len(fleet.tenants) == 3
    for t in fleet.tenants:
        assert Path(t.desired).name in data  # the desired files sit beside it
    assert "secret" not in {k.casefold() for k in data}
    assert not any(d["kind"] == "Secret" for d in _docs())  # created outside git


def test_statefulset_serves_its_shard_and_shards_equal_replicas() -> None:
    sts = _kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["serve", "--fleet", "/config/fleet.yaml"]
    assert int(_env(container)["BRIDGE_SHARDS"]) == sts["spec"]["replicas"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sts["spec"]["serviceName"] == _kind("Service")["metadata"]["name"]
    assert _kind("Service")["spec"]["clusterIP"] == "None"


def test_indexed_job_shards_equal_completions_and_drift_is_not_retried() -> None:
    job = _kind("Job")
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(_env(container)["BRIDGE_SHARDS"])
    assert container["args"][:3] == ["fleet", "/config/fleet.yaml", "drift"]
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["values"] == [2]


def test_the_pods_together_cover_every_tenant_exactly_once() -> None:
    fleet = parse_fleet(_kind("ConfigMap")["data"]["fleet.yaml"])
    sts, job = _kind("StatefulSet"), _kind("Job")
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    (sts_container,) = sts["spec"]["template"]["spec"]["containers"]
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    for pods in (
        # StatefulSet: the ordinal at the end of the pod's host name.
        [default_shard(_env(sts_container), f"{name}-{i}") for i in range(replicas)],
        # Indexed Job: JOB_COMPLETION_INDEX; host names carry a random suffix.
        [
            default_shard({**_env(job_container), "JOB_COMPLETION_INDEX": str(i)}, f"x-{i}-ab1c2")
            for i in range(job["spec"]["completions"])
        ],
    ):
        owners = Counter(n for s in pods for n in fleet.shard(s.index, s.count).names())
        assert sorted(owners) == sorted(fleet.names())
        assert set(owners.values()) == {1}
