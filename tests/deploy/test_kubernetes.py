"""deploy/kubernetes/ without a cluster: the small overlay, assembled as Kustomize does
(tests/support/kustomize.py), validates against the Kubernetes schemas; the Job dagster-k8s
creates for an archive run, built from the instance ConfigMap by dagster-k8s itself, runs the
code location's image, gets every setting by reference, is sized and timed from the settings and
is the pod the NetworkPolicy isolates; the Dagster pods do not admit it."""

from __future__ import annotations

import base64
import ipaddress
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster import DagsterRun
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import get_job_name_from_run_id

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.runs import TAG_MAX_RUNTIME, missing_run_tags
from tests.support.kustomize import Doc, build, containers, find

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "small"
# A recent release among the schemas kubernetes-validate bundles (offline).
K8S_VERSION = "1.33.0"
RUN_LABELS = {"repovault/role": "archive-run"}
# Who a run pod must never reach: the Dagster pods (by their Services) and Keycloak (compose: 8080).
KEYCLOAK_PORT = 8080


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return build(OVERLAY)


@pytest.fixture(scope="module")
def instance(docs: list[Doc]) -> dict[str, Any]:
    return yaml.safe_load(find(docs, "ConfigMap", "dagster-instance")["data"]["dagster.yaml"])


def env_of(docs: list[Doc]) -> dict[str, str]:
    """What a run pod's envFrom gives it: both ConfigMaps and the (example) Secret."""
    secret = find(docs, "Secret", "repovault-secrets")["data"]
    return {
        **find(docs, "ConfigMap", "repovault-config")["data"],
        **find(docs, "ConfigMap", "repovault-services")["data"],
        **{k: base64.b64decode(v).decode() for k, v in secret.items()},
    }


@pytest.fixture(scope="module")
def run_job(docs: list[Doc], instance: dict[str, Any], tmp_path_factory) -> Iterator[dict]:
    """The Job the daemon's K8sRunLauncher would create for a queued archive run, as the JSON
    it sends to the API server. The launcher is built from the ConfigMap's run_launcher config
    (the API client reads a kubeconfig that points nowhere: nothing is sent), the run carries
    the tags RepoVault's run coordinator adds, and the image is the code location's."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
                "users": [{"name": "none", "user": {"token": "unused"}}],
            }
        )
    )
    config = dict(instance["run_launcher"]["config"])
    assert config.pop("job_namespace") == {"env": "DAGSTER_K8S_NAMESPACE"}
    launcher = K8sRunLauncher(
        **config,
        job_namespace="repovault",
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
    )
    partition = "github.com/octo/hello"
    tags = {"dagster/partition": partition}
    tags |= missing_run_tags(tags, Settings.from_env(env_of(docs)))
    run = DagsterRun(job_name="archive_repo_job", run_id=str(uuid.uuid4()), tags=tags)
    code = containers(find(docs, "Deployment", "repovault-code"))[0]
    (image,) = [e["value"] for e in code["env"] if e["name"] == "DAGSTER_CURRENT_IMAGE"]
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    name = get_job_name_from_run_id(run.run_id)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=name,
        pod_name=name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )
    serialized = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    yield {"job": serialized, "tags": tags}


def test_every_manifest_of_the_small_overlay_validates_against_the_kubernetes_schemas(
    docs: list[Doc],
) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job", "NetworkPolicy", "Role"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"].get("namespace") == "repovault", doc["metadata"]["name"]


def test_the_optional_manifests_validate_too() -> None:
    optional = sorted((ROOT / "deploy" / "kubernetes" / "optional").rglob("*.yaml"))
    assert optional
    for path in optional:
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_run_pod_dagster_k8s_builds_validates_and_uses_the_deployed_image(
    docs: list[Doc], run_job: dict
) -> None:
    job = run_job["job"]
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # One image everywhere: the overlay's `images:` retags every RepoVault container, and the
    # run pods take the code location's DAGSTER_CURRENT_IMAGE, which must name the same.
    images = {c["image"] for d in docs for c in containers(d) if "oauth2-proxy" not in c["image"]}
    assert images == {container["image"]} == {"registry.example.com/repovault:0.1.0"}


def test_the_run_pod_gets_every_setting_by_reference_and_no_secret_inline(
    docs: list[Doc], run_job: dict
) -> None:
    (container,) = run_job["job"]["spec"]["template"]["spec"]["containers"]
    sources = {(k, v["name"]) for s in container["envFrom"] for k, v in s.items()}
    assert sources == {
        ("configMapRef", "repovault-config"),
        ("configMapRef", "repovault-services"),
        ("secretRef", "repovault-secrets"),
    }
    code = containers(find(docs, "Deployment", "repovault-code"))[0]
    assert sources == {(k, v["name"]) for s in code["envFrom"] for k, v in s.items()}
    secret = find(docs, "Secret", "repovault-secrets")["data"]
    secret_values = {base64.b64decode(v).decode() for v in secret.values()} - {""}
    # Inline only what Dagster itself sets, and HOME; no secret value anywhere in the Job.
    inline = {e["name"]: e.get("value") for e in container["env"]}
    assert set(inline) == {"DAGSTER_HOME", "HOME", "DAGSTER_RUN_JOB_NAME"}
    assert not any(value in str(run_job["job"]) for value in secret_values)
    assert inline["HOME"] == "/tmp"


def test_the_run_pod_has_every_variable_its_instance_reads(docs: list[Doc], instance: dict) -> None:
    """The run worker rebuilds the instance from the daemon's reference, resolving its
    {env: ...} values in the pod: PostgreSQL's address and password must come from its envFrom.
    Only the launcher's namespace is the daemon's alone (a run pod launches nothing)."""
    read = set(re.findall(r"\{'env': '(\w+)'\}", str(instance)))
    assert "DAGSTER_PG_PASSWORD" in read
    assert read - set(env_of(docs)) == {"DAGSTER_K8S_NAMESPACE"}


def test_the_run_pod_is_locked_down_and_sized_from_the_settings(
    docs: list[Doc], run_job: dict
) -> None:
    pod = run_job["job"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "repovault-run"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The work folder: an emptyDir of 2 x REPOVAULT_MAX_REPO_MB + 1 GiB at REPOVAULT_WORK_DIR.
    settings = find(docs, "ConfigMap", "repovault-config")["data"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    work = volumes[mounts[settings["REPOVAULT_WORK_DIR"]]]
    assert work["emptyDir"]["sizeLimit"] == f"{2 * int(settings['REPOVAULT_MAX_REPO_MB']) + 1024}Mi"
    # Every path written to is an emptyDir (the root filesystem is read-only).
    for path in (
        "/tmp",
        "/opt/dagster/home/storage",
        str(Path(settings["REPOVAULT_SSH_KNOWN_HOSTS"]).parent),
    ):
        assert "emptyDir" in volumes[mounts[path]], path
    resources = container["resources"]
    assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    # Scheduled where the emptyDirs fit.
    request = resources["requests"]["ephemeral-storage"]
    assert _mi(request) >= sum(
        _mi(v["emptyDir"]["sizeLimit"]) for v in volumes.values() if "emptyDir" in v
    )


def test_the_run_pod_is_timed_by_the_run_timeout(
    docs: list[Doc], instance: dict, run_job: dict
) -> None:
    timeout = int(find(docs, "ConfigMap", "repovault-config")["data"]["REPOVAULT_RUN_TIMEOUT_S"])
    assert run_job["tags"][TAG_MAX_RUNTIME] == str(timeout)
    assert instance["run_monitoring"]["enabled"] is True
    # Kubernetes ends the pod a little after run monitoring would have, even with no daemon.
    assert timeout < run_job["job"]["spec"]["activeDeadlineSeconds"] <= timeout + 900
    assert run_job["job"]["spec"]["backoffLimit"] == 0


def test_the_network_policy_isolates_exactly_the_run_pods(docs: list[Doc], run_job: dict) -> None:
    labels = run_job["job"]["spec"]["template"]["metadata"]["labels"]
    policy = find(docs, "NetworkPolicy", "archive-run")["spec"]
    assert policy["podSelector"] == {"matchLabels": RUN_LABELS}
    assert RUN_LABELS.items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in policy
    # No other pod carries the label (it would be cut off like a run).
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            assert not RUN_LABELS.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_run_pods_cannot_reach_the_dagster_pods_or_keycloak(docs: list[Doc], run_job: dict) -> None:
    """Statically: no egress rule selects a RepoVault pod, an address range open to all reaches
    none of the cluster's ranges, and no open port is one of a Dagster Service's or Keycloak's;
    and the Dagster pods' own policies admit nobody with the run pods' labels."""
    egress = find(docs, "NetworkPolicy", "archive-run")["spec"]["egress"]
    dagster_ports = {p["port"] for d in docs if d["kind"] == "Service" for p in d["spec"]["ports"]}
    dagster_ports.add(KEYCLOAK_PORT)
    everywhere = ipaddress.ip_network("0.0.0.0/0")
    for rule in egress:
        ports = {p["port"] for p in rule["ports"]}
        for peer in rule["to"]:
            if "podSelector" in peer:
                # Only the cluster's DNS, in kube-system.
                assert peer["namespaceSelector"] == {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                }
                assert ports == {53}
            else:
                block = peer["ipBlock"]
                cidr = ipaddress.ip_network(block["cidr"])
                assert not ports & dagster_ports, (block, ports)
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                assert all(e.subnet_of(cidr) for e in excepted)
                if cidr == everywhere:
                    assert ports == {443, 22}
                    assert len(excepted) >= 2, "pod and service ranges of the cluster"
    for doc in docs:
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] != "archive-run":
            assert "Ingress" in doc["spec"]["policyTypes"]
            for rule in doc["spec"].get("ingress", []):
                for peer in rule["from"]:
                    selected = peer["podSelector"]["matchLabels"]
                    assert (
                        not selected.items()
                        <= run_job["job"]["spec"]["template"]["metadata"]["labels"].items()
                    )
    for name in ("dagster-webserver", "repovault-code", "dagster-daemon"):
        find(docs, "NetworkPolicy", name)


def test_the_instance_config_loads_and_queues_runs_as_compose_does(
    instance: dict, tmp_path: Path
) -> None:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    loaded, _ = dagster_instance_config(str(tmp_path))
    assert loaded["run_launcher"]["class"] == "K8sRunLauncher"
    compose = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    for section in ("storage", "run_coordinator", "run_monitoring", "run_retries"):
        assert instance[section] == compose[section], section
    assert compose["run_launcher"]["class"] == "DefaultRunLauncher"


def _mi(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]
