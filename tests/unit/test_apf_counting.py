"""hack/apf_counting.py: the FlowSchemas that count one identity's requests, and reading the counts back."""

from __future__ import annotations

import apf_counting


def test_one_flowschema_per_class_in_matching_order_under_one_priority_level() -> None:
    rules = {"events": apf_counting.EVENT_WRITES, "read": apf_counting.READS}
    level, *schemas = apf_counting.flow_objects(("ns", "operator"), rules, "op-", precedence=60)
    assert (level["kind"], level["metadata"]["name"]) == ("PriorityLevelConfiguration", "op-counted")
    assert [(s["metadata"]["name"], s["spec"]["matchingPrecedence"]) for s in schemas] == [
        ("op-events", 60),
        ("op-read", 61),
    ]
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": "operator", "namespace": "ns"}}
    assert schemas[1]["spec"]["rules"] == [{"subjects": [subject], **apf_counting.READS}]
    assert {s["spec"]["priorityLevelConfiguration"]["name"] for s in schemas} == {"op-counted"}


def test_dispatched_sums_the_counts_of_our_schemas_only() -> None:
    metrics = "\n".join(
        [
            "# TYPE apiserver_flowcontrol_dispatched_requests_total counter",
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="op-read",priority_level="x"} 7',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="op-read",priority_level="y"} 2',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="op-events",priority_level="x"} 3',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="e"} 99',
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="other-read",priority_level="x"} 5',
        ]
    )
    assert apf_counting.dispatched(metrics, "op-", ("events", "read", "watch")) == {
        "events": 3,
        "read": 9,
        "watch": 0,
    }
