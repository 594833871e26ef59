"""deploy/k8s, rendered by a real kustomize (``kubectl kustomize``), checked for
what a real cluster needs: the Kubernetes schema (PyPI kubernetes-validate),
both gateway variants, volumes, limits, disruption budgets, the reevaluate
CronJob, the Secrets, and what the NetworkPolicies allow.

The NetworkPolicy checks evaluate the rendered policies by the API's rules:
policies add up per pod; a pod is isolated for a direction as soon as one
policy selecting it names that direction; a flow is allowed when some rule of
some selecting policy matches both the peer and the port.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pullguard.services.runtime.config import LAYERS, load_config
from tests.support.kustomize import K8S, render

OVERLAYS = ("single", "ha")
#: The oldest Kubernetes with gRPC probes GA, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
LAYER_PORTS = {
    "analysis": 50051,
    "fetcher": 50052,
    "format": 50053,
    "hashverify": 50054,
    "source": 50055,
    "signature": 50056,
}
GATEWAY = {"app.kubernetes.io/name": "pullguard", "app.kubernetes.io/component": "gateway"}
NAMESPACE = {"kubernetes.io/metadata.name": "pullguard"}
DNS_POD = {"k8s-app": "kube-dns"}
DNS_NAMESPACE = {"kubernetes.io/metadata.name": "kube-system"}
#: What no egress rule may reach outside the cluster: RFC 1918, carrier-grade NAT,
#: link-local (cloud metadata), IPv6 unique-local and link-local.
LOCAL_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
PUBLIC_ADDRESSES = ("93.184.215.14", "2606:4700::6810:84e5")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template by workload name."""
    specs = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            specs[doc["metadata"]["name"]] = doc["spec"]["jobTemplate"]["spec"]["template"]
    return specs


def _config(docs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    data = _one(docs, "ConfigMap", "pullguard-config")["data"]
    loaded = yaml.safe_load(data[key])
    assert isinstance(loaded, dict)
    return loaded


# --- schema --------------------------------------------------------------------


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", [*OVERLAYS, "base", "secrets-example"])
def test_rendered_manifests_validate_against_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], variant: str, version: str
) -> None:
    if variant == "base":
        docs = render(K8S / "base")
    elif variant == "secrets-example":
        docs = list(yaml.safe_load_all((K8S / "examples" / "secrets.example.yaml").read_text()))
    else:
        docs = rendered[variant]
    assert docs
    for doc in docs:
        _validate(doc, version)


def test_the_schema_check_is_not_vacuous(rendered: dict[str, list[dict[str, Any]]]) -> None:
    bad = copy.deepcopy(_one(rendered["ha"], "Deployment", "pullguard-gateway"))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(bad, KUBERNETES_VERSIONS[0])


def test_cert_manager_component_renders(tmp_path: Path) -> None:
    docs = _render_overlay(tmp_path, ["base"], ["components/cert-manager"])
    kinds = {d["kind"] for d in docs}
    assert {"Certificate", "Issuer"} <= kinds


# --- the two gateway variants --------------------------------------------------


def test_single_runs_one_gateway_on_a_readwriteonce_state_volume(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["single"]
    gateway = _one(docs, "Deployment", "pullguard-gateway")
    assert gateway["spec"]["replicas"] == 1
    # Two gateways never share a state_dir, not even during a rollout.
    assert gateway["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "pullguard-state"},
    }
    state = _one(docs, "PersistentVolumeClaim", "pullguard-state")
    assert state["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert state["spec"]["resources"]["requests"]["storage"]
    assert "database" not in _config(docs, "pullguard.yaml")


def test_ha_runs_several_gateways_on_postgresql_and_a_registry_target(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["ha"]
    gateway = _one(docs, "Deployment", "pullguard-gateway")
    assert gateway["spec"]["replicas"] >= 2
    spec = gateway["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"][-2:] == ["--config", "/etc/pullguard/gateway.yaml"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["state"], "per-replica state_dir"
    assert not [d for d in docs if d["metadata"]["name"] == "pullguard-state"]
    config = _config(docs, "gateway.yaml")
    assert config["database"]["url"].startswith("postgresql://")
    assert config["target"]["kind"] == "registry"
    # The layers' configuration is the gateway's without the credentials.
    layers = _config(docs, "pullguard.yaml")
    assert {k: v for k, v in config.items() if k not in ("database", "target")} == layers
    assert _one(docs, "PodDisruptionBudget", "pullguard-gateway")["spec"]["maxUnavailable"] == 1


def _write_secret_files(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The config with every /etc/... file it names made real under tmp_path."""
    text = yaml.safe_dump(config)
    for mount in ("/etc/pullguard-database/", "/etc/pullguard-target/"):
        folder = tmp_path / mount.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "password").write_text("secret\n")
        (folder / "ca.crt").write_text("")
        text = text.replace(mount, f"{folder}/")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize(("variant", "key"), [("single", "pullguard.yaml"), ("ha", "gateway.yaml")])
def test_the_configuration_loads(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, variant: str, key: str
) -> None:
    config = _write_secret_files(tmp_path, _config(rendered[variant], key))
    # Certificates are the Secrets' business (tests/e2e/test_services_tls.py);
    config.pop("services_tls")
    path = tmp_path / "pullguard.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert set(loaded.services) == set(LAYERS)
    if variant == "ha":
        assert loaded.target.kind == "registry"
        assert loaded.target.password == "secret"


# --- volumes, limits, disruption, reevaluate, secrets ----------------------------


@pytest.mark.parametrize("variant", OVERLAYS)
def test_staging_is_one_sized_readwritemany_volume_every_service_mounts(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    staging = _one(docs, "PersistentVolumeClaim", "pullguard-staging")
    assert staging["spec"]["accessModes"] == ["ReadWriteMany"]
    assert staging["spec"]["resources"]["requests"]["storage"].endswith("Gi")
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        if doc["metadata"]["name"] == "pullguard-vulnerability":
            # It judges the inventory the gateway sends, never a staged byte.
            assert "staging" not in volumes
            continue
        assert volumes["staging"]["persistentVolumeClaim"] == {"claimName": "pullguard-staging"}
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["staging"] == "/var/lib/pullguard/staging", doc["metadata"]["name"]


@pytest.mark.parametrize("variant", OVERLAYS)
def test_every_container_has_ephemeral_storage_limits_and_bounded_scratch(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    specs = _pod_specs(rendered[variant])
    assert set(specs) == {f"pullguard-{s}" for s in (*LAYERS, "gateway", "reevaluate")}
    for name, template in specs.items():
        spec = template["spec"]
        for container in spec["containers"]:
            resources = container["resources"]
            assert resources["limits"]["ephemeral-storage"], name
            assert resources["requests"]["ephemeral-storage"], name
            assert resources["limits"]["memory"], name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        for volume in spec["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), f"{name}: {volume['name']}"


@pytest.mark.parametrize("variant", OVERLAYS)
def test_every_layer_has_a_disruption_budget(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    for layer in LAYERS:
        budget = _one(docs, "PodDisruptionBudget", f"pullguard-{layer}")
        deployment = _one(docs, "Deployment", f"pullguard-{layer}")
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.parametrize("variant", OVERLAYS)
def test_reevaluate_runs_nightly_against_the_gateway_service(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    cron = _one(docs, "CronJob", "pullguard-reevaluate")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "reevaluate"
    config_key = container["args"][container["args"].index("--config") + 1].rsplit("/", 1)[1]
    config = _config(docs, config_key)
    assert config["grpc_listen"] == "pullguard-gateway:5050"
    service = _one(docs, "Service", "pullguard-gateway")
    assert 5050 in {p["port"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("variant", OVERLAYS)
def test_credentials_reach_only_the_pods_that_use_them(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    secrets_used = {
        name: {v["secret"]["secretName"] for v in t["spec"]["volumes"] if "secret" in v}
        for name, t in _pod_specs(rendered[variant]).items()
    }
    for layer in LAYERS:
        assert secrets_used[f"pullguard-{layer}"] == {f"pullguard-{layer}-tls"}
    example = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((K8S / "examples" / "secrets.example.yaml").read_text())
    }
    credentials = set().union(*secrets_used.values()) - {f"pullguard-{s}-tls" for s in LAYERS}
    assert credentials <= example, "every Secret a pod mounts has an example"


# --- network policies ------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One end of a flow: a pod (labels, its namespace's labels) or an address."""

    labels: dict[str, str] = field(default_factory=dict)
    namespace: dict[str, str] = field(default_factory=lambda: dict(NAMESPACE))
    ip: str | None = None


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = rule_peer["ipBlock"]
        cidr = ipaddress.ip_network(block["cidr"])
        if address.version != cidr.version or address not in cidr:
            return False
        return not any(
            address in ipaddress.ip_network(e)
            for e in block.get("except", [])
            if ipaddress.ip_network(e).version == address.version
        )
    if peer.ip is not None:
        return False
    if "namespaceSelector" in rule_peer:
        if not _matches(rule_peer["namespaceSelector"], peer.namespace):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return _matches(rule_peer.get("podSelector", {}), peer.labels)


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def allowed(
    policies: list[dict[str, Any]],
    pod: dict[str, str],
    direction: str,
    peer: Peer,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the pod (in NAMESPACE) may send to (Egress) or hear from (Ingress) peer."""
    selecting = [
        p
        for p in policies
        if _matches(p["spec"]["podSelector"], pod) and direction in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if _port_matches(rule, port, protocol) and (
                not peers or any(_peer_matches(p, peer) for p in peers)
            ):
                return True
    return False


def _component(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "pullguard", "app.kubernetes.io/component": name}


def _policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {name: t["metadata"]["labels"] for name, t in _pod_specs(docs).items()}


def _dns_ok(policies: list[dict[str, Any]], pod: dict[str, str]) -> bool:
    dns = Peer(labels=DNS_POD, namespace=DNS_NAMESPACE)
    return all(allowed(policies, pod, "Egress", dns, 53, proto) for proto in ("UDP", "TCP"))


def _reaches_layers(policies: list[dict[str, Any]], pod: dict[str, str]) -> bool:
    return all(
        allowed(policies, pod, "Egress", Peer(labels=_component(layer)), port)
        for layer, port in LAYER_PORTS.items()
    )


@pytest.mark.parametrize("variant", OVERLAYS)
def test_only_fetcher_leaves_the_cluster(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    policies = _policies(rendered[variant])
    for name, labels in _pods(rendered[variant]).items():
        for address in PUBLIC_ADDRESSES:
            for port in (443, 80, 53, 5432):
                got = allowed(policies, labels, "Egress", Peer(ip=address), port)
                assert got == (name == "pullguard-fetcher" and port in (443, 80)), (
                    f"{name} -> {address}:{port}"
                )


@pytest.mark.parametrize("variant", OVERLAYS)
def test_fetcher_egress_leaves_out_private_cgnat_link_local_and_ipv6_local_ranges(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    policies = _policies(rendered[variant])
    fetcher = _component("fetcher")
    egress = _one(rendered[variant], "NetworkPolicy", "pullguard-fetcher-egress")
    blocks = [p["ipBlock"] for r in egress["spec"]["egress"] for p in r["to"]]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excepted = {e for b in blocks for e in b["except"]}
    assert set(LOCAL_RANGES) <= excepted
    for cidr in LOCAL_RANGES:
        network = ipaddress.ip_network(cidr)
        for address in (network[1], network[-2]):
            assert not allowed(policies, fetcher, "Egress", Peer(ip=str(address)), 443), address
    # and in-cluster: nothing but DNS
    assert not allowed(policies, fetcher, "Egress", Peer(labels=GATEWAY), 5050)


@pytest.mark.parametrize("variant", OVERLAYS)
def test_each_layer_hears_only_the_gateway(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    policies = _policies(docs)
    pods = _pods(docs)
    for layer, port in LAYER_PORTS.items():
        labels = _component(layer)
        selecting = [
            p
            for p in policies
            if _matches(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"]["policyTypes"]
        ]
        peers = [
            peer for p in selecting for r in p["spec"].get("ingress", []) for peer in r["from"]
        ]
        assert peers == [{"podSelector": {"matchLabels": GATEWAY}}], layer
        assert allowed(policies, labels, "Ingress", Peer(labels=pods["pullguard-gateway"]), port)
        for other, other_labels in pods.items():
            if other != "pullguard-gateway":
                assert not allowed(policies, labels, "Ingress", Peer(labels=other_labels), port)
        assert not allowed(policies, labels, "Ingress", Peer(labels=GATEWAY, namespace={}), port)
        assert not allowed(policies, labels, "Ingress", Peer(ip="10.1.2.3"), port)


@pytest.mark.parametrize("variant", OVERLAYS)
def test_the_gateway_api_hears_only_the_clients_an_operator_names(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    policies = _policies(docs)
    pods = _pods(docs)
    operator = {"pullguard.io/operator": "true"}
    for port in (5050, 5080):
        assert allowed(
            policies, GATEWAY, "Ingress", Peer(labels=pods["pullguard-reevaluate"]), port
        )
        assert allowed(policies, GATEWAY, "Ingress", Peer(labels=operator), port)
        assert allowed(
            policies, GATEWAY, "Ingress", Peer(labels=operator, namespace=operator), port
        )
        assert not allowed(policies, GATEWAY, "Ingress", Peer(labels={"app": "other"}), port)
        assert not allowed(
            policies, GATEWAY, "Ingress", Peer(labels=operator, namespace={"x": "y"}), port
        )
        assert not allowed(policies, GATEWAY, "Ingress", Peer(ip="10.0.0.7"), port)
        for layer in LAYERS:
            assert not allowed(policies, GATEWAY, "Ingress", Peer(labels=_component(layer)), port)
    puller = {"pullguard.io/puller": "true"}
    assert allowed(policies, GATEWAY, "Ingress", Peer(labels=puller, namespace=puller), 5000)
    assert not allowed(policies, GATEWAY, "Ingress", Peer(labels={"app": "other"}), 5000)
    assert not allowed(policies, GATEWAY, "Ingress", Peer(labels=operator), 5000)


@pytest.mark.parametrize("variant", OVERLAYS)
def test_every_pod_keeps_dns_and_the_gateway_its_layers(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    policies = _policies(docs)
    for name, labels in _pods(docs).items():
        assert _dns_ok(policies, labels), name
    assert _reaches_layers(policies, GATEWAY)
    # DNS is the cluster's resolver, not port 53 anywhere.
    assert not allowed(policies, GATEWAY, "Egress", Peer(ip="8.8.8.8"), 53, "UDP")
    reevaluate = _pods(docs)["pullguard-reevaluate"]
    assert allowed(policies, reevaluate, "Egress", Peer(labels=GATEWAY), 5050)
    assert not _reaches_layers(policies, reevaluate)


def test_ha_gateway_reaches_its_database_and_target_and_nothing_else_outside(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policies = _policies(rendered["ha"])
    database = Peer(labels={"pullguard-database": "true"}, namespace={"x": "db"})
    target = Peer(labels={"pullguard-target-registry": "true"}, namespace={"x": "registry"})
    assert allowed(policies, GATEWAY, "Egress", database, 5432)
    assert allowed(policies, GATEWAY, "Egress", target, 5000)
    assert not allowed(policies, GATEWAY, "Egress", database, 5000)
    for layer in LAYERS:
        assert not allowed(policies, _component(layer), "Egress", database, 5432)
        assert not allowed(policies, _component(layer), "Egress", target, 5000)


def _render_overlay(
    tmp_path: Path, resources: list[str], components: list[str]
) -> list[dict[str, Any]]:
    """Render a throw-away overlay in tmp_path of deploy/k8s's RESOURCES and COMPONENTS."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize refuses absolute paths: name deploy/k8s relative to the overlay.
    up = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{up}/{r}" for r in resources],
                "components": [f"{up}/{c}" for c in components],
            }
        )
    )
    return render(overlay)


@pytest.mark.parametrize("component", ["target-egress", "database-egress"])
def test_an_egress_component_alone_keeps_the_gateway_its_layers_and_dns(
    tmp_path: Path, component: str
) -> None:
    """A policy selecting the gateway for Egress isolates it: the component must
    not cut it off from what ../network-policies would have allowed."""
    docs = _render_overlay(tmp_path, ["base"], [f"components/{component}"])
    policies = _policies(docs)
    assert [p["metadata"]["name"] for p in policies] == [f"pullguard-gateway-{component}"]
    assert _dns_ok(policies, GATEWAY)
    assert _reaches_layers(policies, GATEWAY)
    for address in PUBLIC_ADDRESSES:
        assert not allowed(policies, GATEWAY, "Egress", Peer(ip=address), 443)
