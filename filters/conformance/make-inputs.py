#!/usr/bin/env python3
"""Writes filters/conformance/inputs.jsonl: the shared events every example
filter is run against (one line per case: {"id": ..., "input": <normalized event>}).

Edit the cases here, run this script, then `node run.mjs gen` to refresh each
filter's conformance.test.jsonl (and add an expectation for the new id in
every filters/<name>/conformance.expect.json: `gen` fails until you do).

Every input is a valid normalized event (docs/event-schema.md, schema_version 1):
all keys present, null where the server sent nothing, `extra`/`raw` only when set.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def obj(kind=None, namespace=None, name=None, uid=None, api_version=None, field_path=None, resource_version=None):
    return {"kind": kind, "namespace": namespace, "name": name, "uid": uid,
            "api_version": api_version, "field_path": field_path, "resource_version": resource_version}


def event(**kw):
    """A normalized event with every key; keyword arguments override."""
    ev = {
        "schema_version": 1,
        "cluster": "conformance",
        "api": "core/v1",
        "watch_type": "ADDED",
        "uid": "00000000-0000-4000-8000-000000000000",
        "resource_version": "1",
        "name": "x.17a8c3f2b1d4e5f0",
        "namespace": "demo",
        "type": "Normal",
        "reason": "Started",
        "message": "Started container app",
        "note": "Started container app",
        "action": None,
        "object": obj("Pod", "demo", "x", None, "v1", None, None),
        "related": None,
        "reporting_controller": "kubelet",
        "reporting_instance": "node-a",
        "count": 1,
        "count_delta": 1,
        "first_timestamp": "2026-11-21T22:00:00Z",
        "last_timestamp": "2026-11-21T22:00:00Z",
        "timestamp": "2026-11-21T22:00:00Z",
        "labels": {},
        "annotations": {},
    }
    extra = kw.pop("extra", None)
    raw = kw.pop("raw", None)
    ev.update(kw)
    if extra is not None:
        ev["extra"] = extra
    if raw is not None:
        ev["raw"] = raw
    return ev


def text(s):
    return {"message": s, "note": s}


CASES = []


def case(id_, ev):
    CASES.append({"id": id_, "input": ev})


# 1. core/v1, the legacy recorder (source.component/host), a crash loop.
case("core-warning-backoff", event(
    api="core/v1", uid="57b668c7-a9d9-44f9-ab25-90309baeb6ac", resource_version="182",
    name="core-created.17a8c3f2b1d4e5f6", namespace="demo", type="Warning", reason="BackOff",
    **text("Back-off restarting failed container app in pod web-0_demo(3f9c2a4e-8b7d-4c1e-9f2a-5d6e7f8a9b0c)"),
    object=obj("Pod", "demo", "web-0", "3f9c2a4e-8b7d-4c1e-9f2a-5d6e7f8a9b0c", "v1", "spec.containers{app}", "4242"),
    reporting_controller="kubelet", reporting_instance="node-1", count=3, count_delta=3,
    first_timestamp="2026-11-21T21:50:00Z", last_timestamp="2026-11-21T22:10:00Z", timestamp="2026-11-21T22:10:00Z"))

# 2. events.k8s.io/v1, a newer client: eventTime only, Normal.
case("v1-normal-scheduled", event(
    api="events.k8s.io/v1", uid="2d4f6a8c-0e1b-4c3d-9e5f-7a9b1c3d5e7f", resource_version="9001",
    name="web-7d9c-x2k.17f3a0", namespace="shop", type="Normal", reason="Scheduled",
    **text("Successfully assigned shop/web-7d9c-x2k to node-b"), action="Binding",
    object=obj("Pod", "shop", "web-7d9c-x2k", "5f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0", "v1", None, "103990"),
    reporting_controller="default-scheduler", reporting_instance="default-scheduler-cp-1",
    first_timestamp="2026-11-21T22:01:02.000300Z", last_timestamp="2026-11-21T22:01:02.000300Z",
    timestamp="2026-11-21T22:01:02.000300Z"))

# 3. events.k8s.io/v1 series: a repeat (MODIFIED), microsecond times.
case("v1-series-failedmount", event(
    api="events.k8s.io/v1", watch_type="MODIFIED", uid="8c1b4c4e-2f7f-4e0c-9d38-3f3a1c0f9e21",
    resource_version="104233", name="db-0.17f3a1", namespace="shop", type="Warning", reason="FailedMount",
    **text('MountVolume.SetUp failed for volume "data" : secret "db-creds" not found'),
    object=obj("Pod", "shop", "db-0", "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d", "v1", None, "77"),
    reporting_controller="kubelet", reporting_instance="node-b", count=6, count_delta=1,
    first_timestamp="2026-11-21T21:59:58.000001Z", last_timestamp="2026-11-21T22:04:10.987654Z",
    timestamp="2026-11-21T22:04:10.987654Z"))

# 4. Normal with an image digest (not a secret: redaction must leave it).
case("core-normal-pulled-digest", event(
    uid="7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b", name="web-0.17a8c3f2b1d4e5f7", namespace="demo",
    type="Normal", reason="Pulled",
    **text('Successfully pulled image "registry.example.com/web@sha256:'
           '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" in 1.2s (1.2s including waiting)'),
    object=obj("Pod", "demo", "web-0", "3f9c2a4e-8b7d-4c1e-9f2a-5d6e7f8a9b0c", "v1", "spec.containers{app}", "4242")))

# 5. A cluster-scoped object (Node): object.namespace null, event in kube-system.
case("v1-node-notready", event(
    api="events.k8s.io/v1", uid="9a386b58-ee37-44ac-ae85-14d9c86eaa60", resource_version="187",
    name="events-v1-node.17a8c3f2b1d4e5fd", namespace="kube-system", type="Warning", reason="NodeNotReady",
    **text("Node node-1 status is now: NodeNotReady"), action="NodeNotReady",
    object=obj("Node", None, "node-1", "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a", "v1", None, None),
    reporting_controller="node-controller", reporting_instance="kube-controller-manager-cp-1",
    first_timestamp="2026-11-21T22:01:02.000300Z", last_timestamp="2026-11-21T22:01:02.000300Z",
    timestamp="2026-11-21T22:01:02.000300Z"))

# 6. Everything the server may leave out is null (core-minimal): no type, reason, message.
case("minimal-nulls", event(
    uid="b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e", name="core-minimal.17a8c3f2b1d4e5f8", namespace="demo",
    type=None, reason=None, message=None, note=None, action=None,
    object=obj(None, "demo", None, None, None, None, None), related=None,
    reporting_controller=None, reporting_instance=None, count=1, count_delta=1,
    first_timestamp="2026-11-21T22:24:48Z", last_timestamp=None, timestamp="2026-11-21T22:24:48Z"))

# 7. Empty strings where the reporter set "" (distinct from null).
case("empty-strings", event(
    uid="c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f", name="empty.17a8c3f2b1d4e5f9", namespace="",
    type="", reason="", message="", note="", action="",
    object=obj("", "", "", None, None, None, None), reporting_controller=None, reporting_instance=None))

# 8. Unicode: non-ASCII text, astral-plane emoji, combining marks, RTL, in labels too.
case("unicode-message", event(
    uid="d3e4f5a6-b7c8-4d9e-8f1a-2b3c4d5e6f7a", name="cafe.17a8c3f2b1d4e5fa", namespace="demo",
    type="Warning", reason="Failed",
    **text("Échec du conteneur « café » ☕ — 容器启动失败 🚀🔥 (נכשל) e\u0301 Ωmega"),
    object=obj("Pod", "demo", "cafe-0", "e4f5a6b7-c8d9-4e0f-9a2b-3c4d5e6f7a8b", "v1", None, "12"),
    labels={"app": "café", "owner": "zoë"}, annotations={"note": "日本語"}))

# 9. JSON escapes: quotes, backslashes, control characters, an escaped slash.
case("escapes", event(
    uid="e5f6a7b8-c9d0-4e1f-8a3b-4c5d6e7f8a9b", name="esc.17a8c3f2b1d4e5fb", namespace="demo",
    type="Warning", reason="Unhealthy",
    **text('Readiness probe failed: HTTP probe failed with statuscode: 503\nbody: {"status":"down"}\t'
           'path C:\\probe\\ready "quoted" \u0001 end'),
    object=obj("Pod", "demo", "web-1", "f6a7b8c9-d0e1-4f2a-9b4c-5d6e7f8a9b0c", "v1", "spec.containers{app}", "4243")))

# 10. Secrets in the text: bearer token, JWT, email, IPv4, IPv6, a hex key.
case("secrets-in-message", event(
    uid="f7a8b9c0-d1e2-4f3a-8b5c-6d7e8f9a0b1c", name="sync.17a8c3f2b1d4e5fc", namespace="payments",
    type="Warning", reason="SyncFailed",
    **text("webhook call failed for admin@example.com from 10.244.1.17 and [fd00:10:244::1a]: "
           "401 with Authorization: Bearer abcDEF123456ghiJKL789mnoPQR "
           "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U "
           "key=3f786850e387550fdab836ed7e6dc881de23001b"),
    object=obj("Deployment", "payments", "sync", "a8b9c0d1-e2f3-4a4b-9c6d-7e8f9a0b1c2d", "apps/v1", None, "888"),
    reporting_controller="example.com/sync-controller", reporting_instance="sync-7d9f6b5c4-x2k8q"))

# 11. About 1.1 KB: long text, a label, a related object, a repeat.
case("large-1k", event(
    api="core/v1", watch_type="MODIFIED", uid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", resource_version="5123456",
    name="batch-28371944-abcde.17a8c3f2b1d4e600", namespace="kube-batch", type="Warning",
    reason="FailedScheduling",
    **text("0/12 nodes are available: 3 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }."),
    action="Scheduling",
    object=obj("Pod", "kube-batch", "batch-28371944-abcde", "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e",
               "v1", None, "5123400"),
    related=obj("Node", None, "node-7", "2c3d4e5f-6a7b-4c8d-8e9f-1a2b3c4d5e6f", "v1", None, None),
    reporting_controller="default-scheduler", reporting_instance="default-scheduler-cp-2",
    count=42, count_delta=5, first_timestamp="2026-11-21T20:00:00Z", last_timestamp="2026-11-21T22:15:00Z",
    timestamp="2026-11-21T22:15:00Z",
    labels={"app.kubernetes.io/name": "batch-runner"}))

# 12. An event an earlier enricher already touched (extra), with raw (include_raw), DELETED.
case("extra-and-raw-deleted", event(
    api="core/v1", watch_type="DELETED", uid="3d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a", resource_version="77",
    name="job.17a8c3f2b1d4e601", namespace="shop", type="Normal", reason="Completed",
    **text("Job completed"),
    object=obj("Job", "shop", "nightly-report", "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b", "batch/v1", None, "70"),
    reporting_controller="job-controller", reporting_instance=None,
    labels={"team": "already-set"},
    extra={"enriched_by": "upstream", "score": 3},
    raw={"kind": "Event", "apiVersion": "v1", "metadata": {"name": "job.17a8c3f2b1d4e601"}, "reason": "Completed"}))


def main():
    out = os.path.join(HERE, "inputs.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for c in CASES:
            f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")) + "\n")
    for c in CASES:
        n = len(json.dumps(c["input"], ensure_ascii=False, separators=(",", ":")).encode())
        print(f"{c['id']}: {n} bytes")


if __name__ == "__main__":
    main()
