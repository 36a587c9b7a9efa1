#!/usr/bin/env python3
"""Split rendered chart output for kubernetes-validate.

    split_rendered.py RENDERED.yaml CORE_OUT.yaml

Writes the objects of Kubernetes' own API groups to CORE_OUT.yaml. Objects whose API is a
CRD of another project (cert-manager.io, monitoring.coreos.com) have no schema in
kubernetes-validate; they are skipped by kind and listed, and any other kind without a
known group fails (it would otherwise be skipped silently by the validator).
"""
import sys

import yaml

SKIPPED = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
CORE_GROUPS = {"v1", "apps", "rbac.authorization.k8s.io", "policy", "networking.k8s.io",
               "admissionregistration.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io"}

src, dst = sys.argv[1], sys.argv[2]
with open(src) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
core, skipped = [], []
for d in docs:
    key = (d["apiVersion"], d["kind"])
    group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else "v1"
    if key in SKIPPED:
        skipped.append(f"{d['kind']}/{d['metadata']['name']}")
    elif group in CORE_GROUPS:
        core.append(d)
    else:
        sys.exit(f"split_rendered: {key} is neither a Kubernetes API nor a known CRD kind to skip")
with open(dst, "w") as f:
    yaml.safe_dump_all(core, f, sort_keys=False)
print(f"{len(core)} objects to validate; skipped (CRDs of other projects, no schema): {', '.join(skipped) or 'none'}")
