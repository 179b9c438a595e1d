"""The fault catalog's pure parts: parameters, labels, who a run may hit, and the draw the workflow makes."""

from __future__ import annotations

import random

import pytest

from durable_chaos.contracts import ContainerState, TargetChoice
from durable_chaos.faults import CATALOG, BadFault, Fault, make_fault, parse_params, target_choice
from subjects import get_subject
from workflows.chaos.plan import draw

ETCD = get_subject("etcd")
POSTGRES = get_subject("postgres")


@pytest.mark.parametrize("kind, params, message", [
    ("loss", {"percent": "150"}, "fault loss: percent=150 is invalid: Input should be less than or equal to 100"),
    ("loss", {"percent": "0"}, "fault loss: percent=0 is invalid"),
    ("loss", {"pct": "3"}, "fault loss has no parameter 'pct' (its parameters: percent)"),
    ("bandwidth", {"rate": "fast"}, "fault bandwidth: rate=fast is invalid"),
    ("stop", {"grace_s": "-1"}, "fault stop: grace_s=-1 is invalid"),
    ("kill", {"signal": "9"}, "fault kill has no parameter 'signal' (its parameters: none)"),
    ("latencyy", {}, f"unknown fault 'latencyy' (known: {', '.join(CATALOG)})"),
])
def test_bad_parameters_are_one_line_naming_the_value(kind, params, message):
    with pytest.raises(BadFault) as err:
        make_fault(kind, params)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind, params, label", [
    ("kill", {}, "kill"),
    ("stop", {"grace_s": "5"}, "stop (grace 5s)"),
    ("loss", {"percent": "30"}, "loss 30%"),
    ("bandwidth", {"rate": "512KBIT"}, "bandwidth 512kbit"),
    ("partition", {"groups": "etcd1|etcd2,etcd3"}, "partition etcd1 | etcd2,etcd3"),
    ("latency", {"delay_ms": "50", "jitter_ms": "10"}, "latency 50ms ±10ms"),
])
def test_labels_name_the_kind_and_its_parameters(kind, params, label):
    assert make_fault(kind, params).label() == label


def test_param_options_must_be_key_value():
    assert parse_params(["percent=30", " rate = 1mbit "]) == {"percent": "30", "rate": "1mbit"}
    with pytest.raises(BadFault, match="expected KEY=VALUE"):
        parse_params(["percent"])


@pytest.mark.parametrize("kind", list(CATALOG))
def test_every_kind_carries_its_help_advice_signature_and_observation(kind):
    cls = CATALOG[kind]
    assert cls.kind == kind and cls.help and cls.looks_like
    assert "{who}" in cls.advice and cls.advice.format(who="etcd2")  # the rules diagnosis fills in the members
    assert isinstance(cls.out_of_service, bool)
    assert not getattr(cls.seen_on, "__isabstractmethod__", False)
    # A member with nothing on it shows no kind's signature.
    assert cls.seen_on(ContainerState(service="etcd2", container="c", running=True, status="running")) is None
    if cls.netns_probe is not None:
        assert cls.observe.__func__ is not Fault.observe.__func__
        assert cls.observe(["-P INPUT ACCEPT"]) == []


@pytest.mark.parametrize("lacks", [*Fault.REQUIRED, "seen_on"])
def test_a_kind_that_lacks_advice_a_signature_or_any_other_part_cannot_be_defined(lacks):
    parts = {"kind": "melt", "help": "h", "looks_like": "l", "advice": "Cool {who}.", "out_of_service": False,
             "seen_on": classmethod(lambda cls, c: None)}
    del parts[lacks]
    with pytest.raises(TypeError, match=f"fault kind 'melt' \\(Melt\\) lacks {lacks}"):
        type("Melt", (Fault,), parts)


def test_a_kind_that_looks_into_the_namespace_must_say_what_it_sees_there():
    with pytest.raises(TypeError, match="lacks observe"):
        class Melt(CATALOG["pause"]):
            kind = "melt"
            netns_probe = "cat /proc/net/dev"


ROLES = {"leader": "etcd2"}


@pytest.mark.parametrize("target, count, must, pool", [
    (None, 1, [], ["etcd1", "etcd2", "etcd3"]),
    ("random", 1, [], ["etcd1", "etcd2", "etcd3"]),
    ("etcd3", 1, ["etcd3"], ["etcd1", "etcd2"]),
    ("leader", 1, ["etcd2"], ["etcd1", "etcd3"]),
    ("follower", 1, [], ["etcd1", "etcd3"]),
])
def test_target_choice_reads_the_role_from_the_roles_given(target, count, must, pool):
    choice = target_choice(ETCD, make_fault("kill"), target, count, False, ROLES)
    assert (choice.must, choice.pool, choice.count) == (must, pool, count)


@pytest.mark.parametrize("target, count, allow, message", [
    (None, 2, False, "hitting 2 of 3 members of etcd loses its quorum (majority must stay up): add "
                     "--allow-quorum-loss"),
    ("etcd1", 4, True, "--count 4 is more than the 3 member(s)"),
    ("follower", 3, True, "--count 3 is more than the 2 member(s) --target follower can hit"),
    ("etcd9", 1, False, "'etcd9' is not a target of etcd (targets: etcd1, etcd2, etcd3, or random, leader, follower)"),
    (None, 0, False, "--count must be at least 1"),
])
def test_target_choice_refuses_with_one_line(target, count, allow, message):
    with pytest.raises(BadFault) as err:
        target_choice(ETCD, make_fault("kill"), target, count, allow, ROLES)
    assert str(err.value).startswith(message)


def test_quorum_loss_is_allowed_when_asked_and_the_subjects_own_rule_counts():
    assert target_choice(ETCD, make_fault("kill"), None, 2, True, ROLES).count == 2
    # Patroni serves with one member left: two of its three may go.
    assert target_choice(POSTGRES, make_fault("stop"), None, 2, False, {"leader": "pg1"}).count == 2


def test_leader_is_refused_when_nobody_holds_the_role_and_partition_groups_fix_the_members():
    with pytest.raises(BadFault, match="no target of etcd holds its leader role now"):
        target_choice(ETCD, make_fault("kill"), "leader", 1, False, {})
    groups = make_fault("partition", {"groups": "etcd1,etcd2|etcd3"})
    choice = target_choice(ETCD, groups, None, 1, False, ROLES)
    assert (choice.must, choice.pool, choice.count) == (["etcd3"], [], 1)  # the smaller side carries the rules
    with pytest.raises(BadFault, match="the groups choose the members"):
        target_choice(ETCD, groups, "etcd1", 1, False, ROLES)
    with pytest.raises(BadFault, match="a member is in both groups"):
        target_choice(ETCD, make_fault("partition", {"groups": "etcd1,etcd2|etcd2"}), None, 1, False, ROLES)


def test_the_draw_of_one_random_member_is_the_draw_runs_made_before_the_catalog():
    """Runs in flight when this shipped replay their recorded choice: one `randrange` over every target."""
    targets = ["etcd1", "etcd2", "etcd3"]
    for seed in range(20):
        before = targets[random.Random(seed).randrange(len(targets))]
        assert draw(TargetChoice(pool=targets), random.Random(seed).randrange) == [before]


def test_the_draw_takes_every_must_and_distinct_others():
    for seed in range(20):
        drawn = draw(TargetChoice(must=["etcd2"], pool=["etcd1", "etcd2", "etcd3"], count=2),
                     random.Random(seed).randrange)
        assert drawn[0] == "etcd2" and len(set(drawn)) == 2
