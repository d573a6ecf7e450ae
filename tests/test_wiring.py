"""Wiring that cannot drift (issue 27): every Secret, Secret key, ConfigMap, ConfigMap key and ServiceAccount that a
rendered pod of an overlay or a step of the compiled pipeline reads is created by that overlay or by the documented
`kubectl create secret` commands (docs/operations.md, whose blocks the docs test runs).

A reference the pod may do without (`optional: true`, e.g. S3 keys where pods have a cloud identity) must still name
an object and keys that some overlay or its documented commands create: a typo or a renamed key fails here instead of
leaving a variable silently unset. kfp's local runner ignores the pipeline's Kubernetes settings, so only this reads them.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from pipelines.schedule import build_parser
from tests.conftest import REPO
from tests.test_docs import read_blocks
from tests.test_infra import OVERLAYS, rendered

PIPELINE = REPO / "pipelines" / "julnet_retrain.yaml"
RAY_AUTH_KEY = "auth_token"  # the key KubeRay reads from the Secret that authOptions.secretName names


class Ref(NamedTuple):
    kind: str  # secret, configmap or serviceaccount
    name: str
    keys: frozenset[str]  # the keys read; empty: the whole object (envFrom, a volume, an account)
    optional: bool
    where: str


def documented_secrets(overlay: str) -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl create secret generic` lines of the block that applies `overlay`."""
    blocks = [b for b in read_blocks("docs/operations.md") if f"infra/overlays/{overlay}" in b.code and "create secret" in b.code]
    assert len(blocks) == 1, f"docs/operations.md needs one block creating {overlay}'s Secrets and applying the overlay"
    found: dict[str, set[str]] = {}
    for line in blocks[0].code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] != ["kubectl"] or "secret" not in words:
            continue
        at = words.index("secret")
        assert words[at + 1] == "generic", line
        keys = {w.split("=", 2)[1] for w in words if w.startswith("--from-literal=")}
        keys |= {w.split("=", 1)[1].split("=", 1)[0] if w.count("=") > 1 else Path(w.split("=", 1)[1]).name
                 for w in words if w.startswith("--from-file=")}
        found[words[at + 2]] = keys
    return found


def created(overlay: str) -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys of everything the overlay renders or its documented commands create."""
    out: dict[tuple[str, str], set[str]] = {}
    for doc in rendered(overlay):
        kind = doc["kind"].lower()
        if kind in ("secret", "configmap"):
            out[(kind, doc["metadata"]["name"])] = {*(doc.get("data") or {}), *(doc.get("stringData") or {})}
        elif kind == "serviceaccount":
            out[(kind, doc["metadata"]["name"])] = set()
    for name, keys in documented_secrets(overlay).items():
        out[("secret", name)] = keys
    return out


def pod_refs(overlay: str) -> list[Ref]:
    """What the overlay's rendered resources read (pod templates at any depth, RayCluster authOptions)."""
    refs: list[Ref] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("secretKeyRef", "configMapKeyRef"):
                kind = "secret" if key == "secretKeyRef" else "configmap"
                refs.append(Ref(kind, value["name"], frozenset({value["key"]}), value.get("optional", False), where))
            elif key in ("secretRef", "configMapRef"):
                refs.append(Ref("secret" if key == "secretRef" else "configmap", value["name"], frozenset(), value.get("optional", False), where))
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                keys = frozenset(item["key"] for item in value.get("items", []))
                refs.append(Ref("secret", value["secretName"], keys, value.get("optional", False), where))
            elif key == "configMap" and isinstance(value, dict) and "name" in value:
                keys = frozenset(item["key"] for item in value.get("items", []))
                refs.append(Ref("configmap", value["name"], keys, value.get("optional", False), where))
            elif key == "authOptions" and isinstance(value, dict) and "secretName" in value:
                refs.append(Ref("secret", value["secretName"], frozenset({RAY_AUTH_KEY}), False, where))
            elif key == "serviceAccountName":
                refs.append(Ref("serviceaccount", value, frozenset(), False, where))
            walk(value, where)

    for doc in rendered(overlay):
        walk(doc, f"{overlay}: {doc['kind']} {doc['metadata']['name']}")
    return refs


def pipeline_refs() -> list[Ref]:
    """What the compiled pipeline's steps read through their Kubernetes platform settings."""
    platform = [d for d in yaml.safe_load_all(PIPELINE.read_text()) if d and "platforms" in d]
    assert len(platform) == 1, "the compiled pipeline has its Kubernetes platform settings"
    refs = []
    for executor, spec in platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        for item in spec.get("secretAsEnv", []):
            refs.append(Ref("secret", item["secretName"], frozenset(k["secretKey"] for k in item["keyToEnv"]), item.get("optional", False), executor))
        for item in spec.get("configMapAsEnv", []):
            refs.append(Ref("configmap", item["configMapName"], frozenset(k["configMapKey"] for k in item["keyToEnv"]), item.get("optional", False), executor))
        if "serviceAccount" in spec:
            refs.append(Ref("serviceaccount", spec["serviceAccount"], frozenset(), False, executor))
    assert refs, "the pipeline's steps read the Ray token at least"
    account = build_parser().get_default("service_account")  # the recurring run's pods run as it (pipelines/schedule.py)
    return [*refs, Ref("serviceaccount", account, frozenset(), False, "pipelines/schedule.py --service-account")]


def missing(refs: list[Ref], here: dict[tuple[str, str], set[str]], anywhere: dict[tuple[str, str], set[str]]) -> list[str]:
    """Each reference that `here` (the overlay) does not satisfy; an optional one only needs to exist `anywhere`."""
    problems = []
    for ref in refs:
        store = anywhere if ref.optional else here
        keys = store.get((ref.kind, ref.name))
        if keys is None:
            problems.append(f"{ref.where} reads {ref.kind} {ref.name}, which nothing creates{' (optional, in no overlay)' if ref.optional else ''}")
        elif not ref.keys <= keys:
            problems.append(f"{ref.where} reads keys {sorted(ref.keys - keys)} of {ref.kind} {ref.name}, which has {sorted(keys)}")
    return problems


def _anywhere() -> dict[tuple[str, str], set[str]]:
    union: dict[tuple[str, str], set[str]] = {}
    for overlay in OVERLAYS:
        for key, keys in created(overlay).items():
            union.setdefault(key, set()).update(keys)
    return union


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_a_pod_or_a_pipeline_step_reads_is_created(overlay: str) -> None:
    problems = missing(pod_refs(overlay) + pipeline_refs(), created(overlay), _anywhere())
    assert not problems, "\n".join(sorted(set(problems)))


def test_a_renamed_key_or_an_uncreated_object_is_caught() -> None:
    """The check itself: the drifts of issue 27 (keys username/password, ConfigMap julnet-s3) are reported."""
    here = {("secret", "julnet-mlflow-client"): {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}, ("configmap", "julnet-env"): {"AWS_REGION"}}
    refs = [Ref("secret", "julnet-mlflow-client", frozenset({"username", "password"}), True, "step"),
            Ref("configmap", "julnet-s3", frozenset({"AWS_REGION"}), True, "step"),
            Ref("configmap", "julnet-env", frozenset({"AWS_ENDPOINT_URL"}), False, "step"),
            Ref("configmap", "julnet-env", frozenset({"AWS_REGION"}), False, "step")]
    assert missing(refs, here, here) == [
        "step reads keys ['password', 'username'] of secret julnet-mlflow-client, which has ['MLFLOW_TRACKING_PASSWORD', 'MLFLOW_TRACKING_USERNAME']",
        "step reads configmap julnet-s3, which nothing creates (optional, in no overlay)",
        "step reads keys ['AWS_ENDPOINT_URL'] of configmap julnet-env, which has ['AWS_REGION']",
    ]
