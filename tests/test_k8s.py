"""k8s/: every overlay renders with kustomize (``kubectl kustomize``) and every object
validates offline against the Kubernetes schemas (``kubernetes-validate``, strict); the
orchestrator's RBAC is exactly the least privilege of DESIGN; sandbox pods are hardened
and their requests/limits agree with what the code assumes; the KubernetesScaler works
with only the verbs the Role grants."""

from __future__ import annotations

import copy
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.tools import find_tool, requires

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("base", "overlays/paper", "overlays/dev", "overlays/gvisor", "overlays/node-pools", "overlays/external")
#: the tests that render k8s/ need a kubectl whose kustomize reads the overlays
KUBECTL = requires("kubectl")
SANDBOXES = ("sandbox", "sandbox-gpu", "sandbox-arm")

#: docs/kubernetes.md: what the orchestrator may do, in its namespace only.
ORCHESTRATOR_MAY = {
    ("apps", "deployments/scale"): {"get", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch"},
    ("", "pods"): {"get", "list", "watch"},
}


@cache
def render(overlay: str) -> tuple[dict, ...]:
    kubectl = find_tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kustomize {overlay}: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] == kind}


def sandbox_deployments(overlay: str) -> list[dict]:
    return [d for name, d in objects(overlay, "Deployment").items() if name in SANDBOXES]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def quantity_cores(q: str) -> float:
    return float(q[:-1]) / 1000 if str(q).endswith("m") else float(q)


def quantity_mib(q: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
    assert m, f"memory quantity {q!r} is not in Mi or Gi"
    return int(m[1]) * units[m[2]]


def _addresses(overlay: str) -> dict[str, str]:
    """The Kafka bootstrap each part is given."""
    out = {}
    for kind in ("Deployment", "Job"):
        for name, obj in objects(overlay, kind).items():
            for c in obj["spec"]["template"]["spec"]["containers"]:
                args = c.get("args", [])
                if "--bootstrap" in args:
                    out[name] = args[args.index("--bootstrap") + 1]
                if "KAFKA_BOOTSTRAP" in env_of(c):
                    out[name] = env_of(c)["KAFKA_BOOTSTRAP"]
    assert {"orchestrator", "injector", "experiment", "sandbox"} <= set(out), out
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay):
    import kubernetes_validate

    docs = render(overlay)
    assert len(docs) >= 15
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises with the field path
        assert doc["metadata"].get("namespace", "scalelab") == "scalelab" or doc["kind"] in (
            "ClusterRole", "ClusterRoleBinding", "RuntimeClass", "Namespace")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "NetworkPolicy", "Role", "RoleBinding", "Job", "ConfigMap"} <= kinds
    bundled = {"kafka", "prometheus"} <= set(objects(overlay, "Service"))
    assert bundled == (overlay != "overlays/external")  # external: your Kafka and Prometheus
    addresses = _addresses(overlay)
    assert len(set(addresses.values())) == 1, f"every part must use the same Kafka: {addresses}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_the_orchestrator_has_least_privilege_and_nothing_else(overlay):
    roles = objects(overlay, "Role")
    bindings = [b for kind in ("RoleBinding", "ClusterRoleBinding") for b in objects(overlay, kind).values()
                if any(s.get("name") == "orchestrator" and s["kind"] == "ServiceAccount" for s in b["subjects"])]
    assert [(b["kind"], b["roleRef"]["kind"]) for b in bindings] == [("RoleBinding", "Role")]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles[bindings[0]["roleRef"]["name"]]["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in ORCHESTRATOR_MAY, f"the orchestrator may not touch {group}/{resource}"
                extra = set(rule["verbs"]) - ORCHESTRATOR_MAY[(group, resource)]
                assert not extra, f"verbs {sorted(extra)} on {group}/{resource} are beyond least privilege"
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == ORCHESTRATOR_MAY
    deployment = objects(overlay, "Deployment")["orchestrator"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "orchestrator"


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_sandbox_pods_are_hardened_and_drain(overlay):
    for d in sandbox_deployments(overlay):
        pod = d["spec"]["template"]["spec"]
        name = d["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        tmp = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/tmp"]
        assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp]
        assert env_of(c)["TMPDIR"] == "/tmp"
        # probes on the control port (answered from a thread of its own: a storm of submissions
        # holding every request thread does not get a busy replica restarted), which the
        # gunicorn config opens where SANDBOX_CONTROL_PORT says, after the replica proved it runs programs
        ports = {port["name"]: port["containerPort"] for port in c["ports"]}
        assert "python:scalelab.sandbox.gunicorn_conf" in c["command"]
        # and its worker: a request must arrive within SANDBOX_REQUEST_TIMEOUT, a connection waits for a free
        # thread (no balancer buffers requests in front of these pods)
        assert not {"-k", "--worker-class"} & set(c["command"])
        assert int(env_of(c)["SANDBOX_CONTROL_PORT"]) == ports["control"] != ports["http"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "control"}
        sleep = float(re.search(r"sleep\((\d+)\)", " ".join(c["lifecycle"]["preStop"]["exec"]["command"]))[1])
        graceful = float(c["command"][c["command"].index("--graceful-timeout") + 1])
        assert pod["terminationGracePeriodSeconds"] >= sleep + graceful  # in-flight requests finish
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    runtime = [d["spec"]["template"]["spec"].get("runtimeClassName") for d in sandbox_deployments(overlay)]
    if overlay == "overlays/gvisor":
        assert runtime == ["gvisor"] and objects(overlay, "RuntimeClass")["gvisor"]["handler"] == "runsc"
    else:
        assert set(runtime) == {None}


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_the_sandbox_network_policy_allows_requests_in_and_spans_to_kafka_only(overlay):
    policy = objects(overlay, "NetworkPolicy")["sandbox"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    kafka, dns = policy["egress"]
    to = [{"ipBlock": {"cidr": "10.0.0.0/8"}}] if overlay == "overlays/external" else [
        {"podSelector": {"matchLabels": {"app": "kafka"}}}]
    assert kafka == {"to": to, "ports": [{"port": 9092, "protocol": "TCP"}]}
    assert {p["port"] for p in dns["ports"]} == {53} and dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    selected = policy["podSelector"]
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in sandbox_deployments(overlay)}
    for name, lab in labels.items():  # every sandbox pool is under the policy
        if "matchLabels" in selected:
            assert selected["matchLabels"].items() <= lab.items(), name
        else:
            (expr,) = selected["matchExpressions"]
            assert lab[expr["key"]] in expr["values"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_requests_and_limits_agree_with_the_code_defaults(overlay):
    from scalelab.experiments.config import load_config
    from scalelab.orchestrator.scalers.local import ReplicaSpec
    from scalelab.sandbox.app import Settings

    spec, app = ReplicaSpec(), Settings()
    assert (spec.cpu_request, spec.cpu_limit, spec.memory_request_mib, spec.memory_limit_mib) == (
        app.cpu_request, app.cpu_limit, app.memory_request_mib, app.memory_limit_mib) == (0.5, 0.5, 512, 512)
    cfg_text = objects(overlay, "ConfigMap")["experiment"]["data"]["experiment.yaml"]
    path = Path(f"/tmp/scalelab-k8s-{overlay.replace('/', '-')}.yaml")
    path.write_text(cfg_text)
    cfg = load_config(path)  # the experiment the Job runs is a valid live config
    assert cfg.backend == "live"
    for d in sandbox_deployments(overlay):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        r, env = c["resources"], env_of(c)
        got = (quantity_cores(r["requests"]["cpu"]), quantity_cores(r["limits"]["cpu"]),
               quantity_mib(r["requests"]["memory"]), quantity_mib(r["limits"]["memory"]))
        assert got == (spec.cpu_request, spec.cpu_limit, spec.memory_request_mib, spec.memory_limit_mib)
        assert got == tuple(float(env[k]) for k in ("SANDBOX_CPU_REQUEST", "SANDBOX_CPU_LIMIT",
                                                    "SANDBOX_MEMORY_REQUEST_MIB", "SANDBOX_MEMORY_LIMIT_MIB"))
        assert env["SANDBOX_CONTAINER"] == c["name"]  # the orchestrator's PromQL selects by container name
        if d["metadata"]["name"] == "sandbox":
            assert c["name"] == "sandbox"
            assert (cfg.app.cpu_request, cfg.app.cpu_limit) == got[:2]
            for p in cfg.policies:  # baselines that know the request are told the deployed one
                if "cpu_request" in p.params:
                    assert p.params["cpu_request"] == got[0]
    args = objects(overlay, "Deployment")["orchestrator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert int(args[args.index("--max") + 1]) >= cfg.cluster.max_replicas
    assert args[args.index("--context") + 1] == cfg.context.preset


@KUBECTL
def test_the_node_pools_are_the_base_sandbox_pinned_to_their_nodes():
    base = objects("base", "Deployment")["sandbox"]
    deps = objects("overlays/node-pools", "Deployment")
    args = deps["orchestrator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--deployment"] == list(SANDBOXES)
    for pool, key in (("sandbox-gpu", "nvidia.com/gpu.present"), ("sandbox-arm", "kubernetes.io/arch")):
        d = copy.deepcopy(deps[pool])
        pod = d["spec"]["template"]["spec"]
        terms = pod.pop("affinity")["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == key
        assert pod.pop("tolerations")
        (c,) = pod["containers"]
        assert c.pop("name") == pool
        for part in ("requests", "limits"):
            c["resources"][part].pop("nvidia.com/gpu", None)
        c["env"] = [e for e in c["env"] if e["name"] not in ("SANDBOX_CONTAINER", "SANDBOX_SERVICE")]
        (b,) = copy.deepcopy(base["spec"]["template"]["spec"]["containers"])
        b.pop("name")
        b["env"] = [e for e in b["env"] if e["name"] not in ("SANDBOX_CONTAINER", "SANDBOX_SERVICE")]
        assert c == b, f"{pool} drifted from k8s/base/sandbox.yaml"
        assert {k: v for k, v in pod.items() if k != "containers"} == {
            k: v for k, v in base["spec"]["template"]["spec"].items() if k != "containers"}
    assert "nvidia.com/gpu" in deps["sandbox-gpu"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@KUBECTL
def test_every_image_is_pinned(overlay):
    for doc in render(overlay):
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def test_dockerfiles_pin_their_base_and_run_as_non_root():
    for path in (ROOT / "Dockerfile", ROOT / "sandbox" / "Dockerfile"):
        text = path.read_text()
        froms = re.findall(r"^FROM (\S+)", text, re.M)
        assert froms and all(re.search(r":\d+\.\d+\.\d+-slim-bookworm$", f) for f in froms), path
        user = re.findall(r"^USER (\S+)", text, re.M)
        assert user and user[-1].split(":")[0] not in ("0", "root"), path
    # the sandbox image holds only the sandbox package (scalelab/__init__.py and sandbox/ as scalelab/sandbox):
    # it imports the standard library, kafka, the project's errors and itself only
    import ast
    import sys

    for module in (ROOT / "sandbox").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for n in names:
                top = n.split(".")[0]
                assert (top in sys.stdlib_module_names or top in ("kafka", "__future__")
                        or n in ("scalelab.sandbox", "scalelab.errors") or n.startswith("scalelab.sandbox.")
                        # the image installs gunicorn: the replicas' config subclasses its threaded worker
                        or (top == "gunicorn" and module.name == "gunicorn_conf.py")
                        # and confluent-kafka: the jobs architecture's runners consume their jobs with it
                        or (top == "confluent_kafka" and module.name == "job_runner.py")), (module, n)
    assert '"confluent-kafka==' in (ROOT / "sandbox" / "Dockerfile").read_text()
    text = (ROOT / "sandbox" / "Dockerfile").read_text()
    assert "COPY sandbox scalelab/sandbox" in text and "COPY scalelab/__init__.py scalelab/errors.py scalelab/" in text


def test_the_kubernetes_scaler_needs_only_the_verbs_the_role_grants():
    from k8s_stub import StubAPIServer

    from scalelab.orchestrator.scalers.kubernetes import KubernetesScaleError, KubernetesScaler

    allowed = {(verb, resource) for (group, resource), verbs in ORCHESTRATOR_MAY.items() if group == "apps"
               for verb in verbs}
    with StubAPIServer(namespace="scalelab", replicas=1, ready_delay_s=0.05, allowed=allowed) as api:
        scaler = KubernetesScaler("sandbox", "scalelab", host=api.url, poll_s=0.02)
        scaler.scale_to(3)
        assert (scaler.desired_replicas, scaler.ready_replicas) == (3, 3)
        assert set(api.calls) <= allowed and ("patch", "deployments/scale") in api.calls
    narrower = allowed - {("patch", "deployments/scale")}
    with StubAPIServer(namespace="scalelab", allowed=narrower) as api:
        scaler = KubernetesScaler("sandbox", "scalelab", host=api.url, poll_s=0.02)
        with pytest.raises(KubernetesScaleError, match="HTTP 403") as err:
            scaler.scale_to(2)
        assert err.value.retry is False  # a missing permission is permanent, reported at once


#: KEDA's ScaledObject (keda.sh/v1alpha1) as its CRD declares it (KEDA 2.x, docs
#: https://keda.sh/docs/latest/reference/scaledobject-spec/): the spec's fields and types.
#: kubernetes-validate has no CRD schemas; KEDA publishes its CRD only in its release
#: manifests (GitHub), and no PyPI or npm package ships it as a schema Python can read, so
#: the test checks these fields by hand.
KEDA_SPEC_FIELDS = {"scaleTargetRef": dict, "pollingInterval": int, "cooldownPeriod": int, "initialCooldownPeriod": int,
                    "idleReplicaCount": int, "minReplicaCount": int, "maxReplicaCount": int, "advanced": dict,
                    "triggers": list, "fallback": dict}
#: KEDA's Kafka scaler (https://keda.sh/docs/latest/scalers/apache-kafka/): its metadata keys.
KEDA_KAFKA_KEYS = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                   "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
                   "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls",
                   "ensureEvenDistributionOfPartitions"}


@KUBECTL
def test_the_runners_overlay_renders_validates_and_scales_runners_with_keda_on_the_groups_lag():
    import kubernetes_validate

    overlay = "overlays/runners"
    docs = render(overlay)
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # not in kubernetes-validate's schemas: checked below
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
        assert doc["metadata"].get("namespace", "scalelab") == "scalelab" or doc["kind"] in (
            "ClusterRole", "ClusterRoleBinding", "Namespace")
    deployments = objects(overlay, "Deployment")
    assert "sandbox" not in deployments and "experiment" not in objects(overlay, "Job")
    runners = deployments["runners"]
    pod = runners["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:3] == ["python", "-m", "scalelab.sandbox.job_runner"]
    cmd = c["command"]
    opts = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd), 2)}
    assert opts["--group"] == "runners" and opts["--jobs-topic"] == "jobs" and opts["--results-topic"] == "results"
    assert int(opts["--max-concurrent-jobs"]) == 5  # PrairieLearn's grader default, the config's default
    assert pod["terminationGracePeriodSeconds"] >= float(opts["--drain-timeout"])  # a drain finishes its jobs
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert env_of(c)["SANDBOX_CONTAINER"] == "sandbox"  # the orchestrator's PromQL reads the runners' usage
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "control"}
    # the topics, with the partitions the runners' group spreads
    (topics,) = objects(overlay, "Job").values()
    script = topics["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--partitions 12" in script and "jobs results" in script
    # the orchestrator watches the queue of the runners' Deployment
    args = deployments["orchestrator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--jobs" in args and args[args.index("--deployment") + 1] == "runners"
    for name in ("injector", "injector-worker"):
        (ic,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert ic["args"][ic["args"].index("--host") + 1] == "kafka://kafka-0.kafka:9092"
        assert env_of(ic)["INJECTOR_TASK"] == "job"
    # KEDA's ScaledObject, field by field against its spec
    (so,) = objects(overlay, "ScaledObject").values()
    assert so["apiVersion"] == "keda.sh/v1alpha1" and set(so) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = so["spec"]
    for key, value in spec.items():
        assert key in KEDA_SPEC_FIELDS and isinstance(value, KEDA_SPEC_FIELDS[key]), key
        if KEDA_SPEC_FIELDS[key] is int:
            assert 0 <= value < 2**31 and not isinstance(value, bool), key  # int32
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "runners"}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= 12  # no runner without a partition
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka" and set(trigger) <= {"type", "metadata", "name", "authenticationRef",
                                                          "useCachedMetrics", "metricType"}
    meta = trigger["metadata"]
    assert set(meta) <= KEDA_KAFKA_KEYS and all(isinstance(v, str) for v in meta.values())  # a map of strings
    assert meta["bootstrapServers"] == "kafka-0.kafka:9092" and meta["consumerGroup"] == "runners"
    assert meta["topic"] == "jobs" and int(meta["lagThreshold"]) == int(opts["--max-concurrent-jobs"])
    assert int(meta["activationLagThreshold"]) == 0
    assert meta["offsetResetPolicy"] in ("earliest", "latest") and meta["offsetResetPolicy"] == "earliest"
