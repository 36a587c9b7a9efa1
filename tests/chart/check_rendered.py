#!/usr/bin/env python3
"""Checks on the chart's rendered output (scripts/test-chart runs it after `helm template`).

    check_rendered.py default RENDERED.yaml
    check_rendered.py all-on  RENDERED.yaml

kubernetes-validate checks every object against the Kubernetes schemas; this checks what the
schemas cannot: the webhook's selector and failure policy, TLS wiring (a generated certificate
that chains to the caBundle and names the Service, or cert-manager's Certificate and CA
injection), least-privilege RBAC, security contexts, the monitors' labels and bearer tokens,
that the PrometheusRule is files/alerts.yaml and the dashboard ConfigMap is files/dashboard.json.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "poolwarden")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


EXPECTED_CLUSTER_RULES = [
    (["poolwarden.dev"], ["dbpoolpolicies"], ["get", "list", "watch", "patch", "update"]),
    (["poolwarden.dev"], ["dbpoolpolicies/status"], ["get", "patch", "update"]),
    ([""], ["configmaps", "secrets"], ["get", "list", "watch", "create", "patch", "update", "delete"]),
    ([""], ["pods"], ["get", "list", "watch"]),
    ([""], ["events"], ["create", "patch"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
    (["apps"], ["deployments", "statefulsets"], ["get", "list", "watch"]),
    (["autoscaling"], ["horizontalpodautoscalers"], ["get", "list", "watch"]),
]


def check_common(docs, ns, fullname, replicas):
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == replicas, f"replicas {spec['replicas']} != {replicas}")
    c = pod["containers"][0]
    check(c["args"][0] == "run", "operator runs `run`")
    for flag in ("--metrics-listen=", "--webhook-listen=", "--webhook-cert-dir=/var/run/poolwarden/webhook-certs"):
        check(any(a.startswith(flag) for a in c["args"]), f"operator arg {flag}")
    sc, psc = c["securityContext"], pod["securityContext"]
    check(sc.get("runAsNonRoot") and sc.get("runAsUser") == 65532, "container runs as 65532, non-root")
    check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "drops ALL capabilities")
    check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container seccomp RuntimeDefault")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp RuntimeDefault")
    check(psc.get("runAsUser") == 65532 and psc.get("runAsNonRoot"), "pod runs as 65532")
    check("requests" in c["resources"] and "limits" in c["resources"], "resources set")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness /readyz")
    check("podAntiAffinity" in pod.get("affinity", {}), "pod anti-affinity")
    secret_vol = [v for v in pod["volumes"] if "secret" in v][0]
    check(secret_vol["secret"]["secretName"] == f"{fullname}-webhook-tls", "webhook cert volume")
    env = {e["name"]: e for e in c["env"]}
    check("POD_NAMESPACE" in env and "POD_NAME" in env, "pod name/namespace for the Lease")

    pdb = one(docs, "PodDisruptionBudget")
    check(pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"], "PDB selects the operator")

    svc = one(docs, "Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(ports["https-webhook"]["port"] == 443 and ports["https-webhook"]["targetPort"] == "webhook", "webhook port")
    check(ports["http-metrics"]["targetPort"] == "metrics", "metrics port")

    cr = one(docs, "ClusterRole")
    rules = [(r["apiGroups"], r["resources"], r["verbs"]) for r in cr["rules"]]
    check(rules == EXPECTED_CLUSTER_RULES, f"ClusterRole rules are the least-privilege list: {rules}")
    for r in cr["rules"] + one(docs, "Role")["rules"]:
        check("*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"], f"no wildcard: {r}")
    role = one(docs, "Role")
    check(role["metadata"]["namespace"] == ns, "the Lease Role is namespaced to the release")
    check(role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                             "verbs": ["get", "list", "watch", "create", "update", "patch"]}], "Lease rules")
    sa = one(docs, "ServiceAccount")
    for binding in (one(docs, "ClusterRoleBinding"), one(docs, "RoleBinding")):
        check(binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ns}],
              f"{binding['kind']} binds the ServiceAccount")
    check(pod["serviceAccountName"] == sa["metadata"]["name"], "the Deployment uses the ServiceAccount")

    mwc = one(docs, "MutatingWebhookConfiguration")
    (wh,) = mwc["webhooks"]
    check(wh["failurePolicy"] == "Fail", "failurePolicy Fail")
    check(wh["sideEffects"] == "None", "sideEffects None")
    check(wh["objectSelector"] == {"matchExpressions": [{"key": "poolwarden.dev/policy", "operator": "Exists"}]},
          "objectSelector on poolwarden.dev/policy")
    check(wh["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"], "scope": "Namespaced"}], "Pod CREATE only")
    cc = wh["clientConfig"]["service"]
    check(cc == {"name": svc["metadata"]["name"], "namespace": ns, "path": "/mutate", "port": 443},
          f"webhook calls the Service on /mutate: {cc}")

    cm = one(docs, "ConfigMap", f"{fullname}-dashboard")
    check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap labelled grafana_dashboard")
    with open(os.path.join(CHART, "files", "dashboard.json")) as f:
        check(json.loads(cm["data"]["poolwarden.json"]) == json.load(f), "the ConfigMap holds files/dashboard.json")
    return mwc, svc


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)


def check_default(docs):
    ns, fullname = "poolwarden-system", "poolwarden"
    mwc, svc = check_common(docs, ns, fullname, replicas=2)
    for kind in ("Certificate", "Issuer", "ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"):
        check(not [d for d in docs if d["kind"] == kind], f"no {kind} by default")
    secret = one(docs, "Secret", f"{fullname}-webhook-tls")
    check(secret["type"] == "kubernetes.io/tls", "TLS Secret")
    ca_bundle = mwc["webhooks"][0]["clientConfig"]["caBundle"]
    check(ca_bundle == secret["data"]["ca.crt"], "caBundle is the Secret's ca.crt")
    with tempfile.TemporaryDirectory() as d:
        for key in ("tls.crt", "ca.crt", "tls.key"):
            with open(os.path.join(d, key), "wb") as f:
                f.write(base64.b64decode(secret["data"][key]))
        v = openssl("verify", "-CAfile", os.path.join(d, "ca.crt"), os.path.join(d, "tls.crt"))
        check(v.returncode == 0, f"the serving certificate chains to the caBundle: {v.stdout}{v.stderr}")
        text = openssl("x509", "-noout", "-text", "-in", os.path.join(d, "tls.crt")).stdout
        check(f"DNS:{svc['metadata']['name']}.{ns}.svc" in text, "the certificate names <service>.<ns>.svc")
        pub_crt = openssl("x509", "-noout", "-pubkey", "-in", os.path.join(d, "tls.crt")).stdout
        pub_key = openssl("pkey", "-pubout", "-in", os.path.join(d, "tls.key")).stdout
        check(pub_crt and pub_crt == pub_key, "tls.key belongs to tls.crt")


def check_all_on(docs):
    ns, fullname = "poolwarden-system", "poolwarden"
    mwc, _ = check_common(docs, ns, fullname, replicas=3)
    check(not [d for d in docs if d["kind"] == "Secret"], "no chart-made Secret with cert-manager")
    cert = one(docs, "Certificate")
    check(cert["spec"]["secretName"] == f"{fullname}-webhook-tls", "Certificate writes the webhook Secret")
    check(f"{fullname}.{ns}.svc" in cert["spec"]["dnsNames"], "Certificate names the Service")
    issuer = one(docs, "Issuer")
    check(cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"], "Certificate uses the chart's Issuer")
    check(mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{ns}/{cert['metadata']['name']}",
          "cert-manager injects the CA from the Certificate")
    check("caBundle" not in mwc["webhooks"][0]["clientConfig"], "no caBundle of the chart's own")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    check("requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"], "hard anti-affinity")

    sm = one(docs, "ServiceMonitor")
    check(sm["spec"]["endpoints"][0]["honorLabels"] is True, "ServiceMonitor keeps the policies' namespace label")
    check(sm["spec"]["endpoints"][0]["port"] == "http-metrics", "ServiceMonitor scrapes the metrics port")
    pms = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "PodMonitor"}
    check(set(pms) == {("clinical", "clinical-backend-poolwarden-sidecar"), ("pharmacy", "dispensing-poolwarden-sidecar")},
          f"one PodMonitor per policy: {sorted(pms)}")
    for (pm_ns, _), pm in pms.items():
        policy = pm["spec"]["selector"]["matchLabels"]["poolwarden.dev/policy"]
        (ep,) = pm["spec"]["podMetricsEndpoints"]
        check(ep["path"] == "/api/metrics" and ep["port"] == "pw-admin", "PodMonitor scrapes /api/metrics on pw-admin")
        want = "dispensing-metrics-token" if policy == "dispensing" else f"{policy}-poolwarden-admin"
        check(ep["authorization"] == {"type": "Bearer", "credentials": {"name": want, "key": "token"}},
              f"PodMonitor bearer token from {want}: {ep['authorization']}")
        check(pm["spec"]["namespaceSelector"] == {"matchNames": [pm_ns]}, "PodMonitor watches its own namespace")
        check({"sourceLabels": ["__meta_kubernetes_pod_label_poolwarden_dev_policy"], "targetLabel": "policy",
               "action": "replace"} in ep["relabelings"], "PodMonitor labels series with policy")

    rule = one(docs, "PrometheusRule")
    with open(os.path.join(CHART, "files", "alerts.yaml")) as f:
        text = f.read().replace("https://example.invalid/poolwarden/blob/main/docs/runbook.md",
                                "https://runbooks.example.invalid/poolwarden/runbook.md")
    check(rule["spec"] == yaml.safe_load(text), "the PrometheusRule is files/alerts.yaml (runbook base replaced)")
    netpol = one(docs, "NetworkPolicy")
    check(set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy restricts both directions")
    cm = one(docs, "ConfigMap", f"{fullname}-dashboard")
    check(cm["metadata"]["namespace"] == "monitoring", "dashboard ConfigMap in the Grafana namespace")


def main():
    mode, path = sys.argv[1], sys.argv[2]
    docs = load(path)
    {"default": check_default, "all-on": check_all_on}[mode](docs)
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        sys.exit(1)
    print(f"check_rendered {mode}: {len(docs)} objects OK")


if __name__ == "__main__":
    main()
