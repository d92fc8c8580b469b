"""explain against the sandbox (its own effective-policy answer is the oracle), and export then
plan of the exported file: the tenant matches what it exported."""

from __future__ import annotations

import json

import pytest
from e2e_support import NORTHWIND

from bridge.sandbox import Sandbox

pytestmark = pytest.mark.e2e

GUEST = "locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com"  # in Physicians
SOURCE = {"direct": "direct", "group": "group", "default": "global"}


def _upn(sb: Sandbox, pos: int) -> str:
    return str(sb.tenant.upns[pos])


def _users(sb: Sandbox) -> dict[str, str]:
    """One user of each kind: a direct assignment, a member of two assigned groups (rank
    decides), a guest, and someone in no assigned group (Global)."""
    t = sb.tenant
    direct = set(t.direct_assignments())
    in_two = next(
        _upn(sb, pos)
        for pos in range(t.user_count)
        if t.user_ids[pos] not in direct
        and {g["displayName"] for g in t.member_of(t.user_ids[pos])}
        == {"Emergency Department", "Physicians"}
    )
    on_global = next(
        _upn(sb, pos)
        for pos in range(t.user_count)
        if t.user_ids[pos] not in direct and not t.member_of(t.user_ids[pos])
    )
    return {
        "direct": _upn(sb, t.user_ids.index(sorted(direct)[0])),
        "two groups": in_two,
        "guest": GUEST,
        "global": on_global,
    }


@pytest.mark.parametrize("kind", ["direct", "two groups", "guest", "global"])
def test_explain_matches_the_services_effective_policy(kind, ro, cli_for):
    upn = _users(ro)[kind]
    policy, assignment, group_id = ro.tenant.effective_policy(upn)
    ranks = {
        a["GroupId"]: a["Rank"]
        for a in ro.tenant.list_group_assignments()
        if a["PolicyType"] == "TeamsMessagingPolicy"
    }
    settings = ro.tenant.get_policy("Global" if policy == "Global" else f"Tag:{policy}")

    result = cli_for(ro)("explain", upn, "--format", "json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert (data["user"], data["policy"], data["source"]) == (upn, policy, SOURCE[assignment])
    assert data["group_id"] == group_id
    assert data["rank"] == (ranks[group_id] if group_id else None)
    assert data["ReadReceiptsEnabledType"] == settings["ReadReceiptsEnabledType"]
    assert data["AllowPriorityMessages"] == settings["AllowPriorityMessages"]
    expected = {
        "direct": "direct assignment",
        "two groups": "group Emergency Department (rank 1)",
        "guest": "group Physicians (rank 2)",
        "global": "the Global policy",
    }[kind]
    text = cli_for(ro)("explain", upn)
    assert text.code == 0, text
    assert text.out.splitlines()[0] == f"{upn}: {policy}  (from {expected})"


def test_explain_an_unknown_user_is_an_error(ro, cli_for):
    result = cli_for(ro)("explain", "nobody@northwind-health.org")
    assert result.code == 1, result
    assert result.err == (
        "error: no user 'nobody@northwind-health.org' in the tenant (give a UPN or an object id)\n"
    )


def test_export_then_plan_of_the_export_shows_no_changes(ro, cli_for, tmp_path):
    cli = cli_for(ro)
    exported = cli("export", "--out", "exported.yaml")
    assert exported.code == 0, exported
    text = (tmp_path / "exported.yaml").read_text()
    assert "Tag:" not in text  # bare names in the file
    t = ro.tenant
    for uid in t.direct_assignments():
        assert _upn(ro, t.user_ids.index(uid)) in text
    plan = cli("plan", "exported.yaml", "--detailed-exitcode")
    assert (plan.code, plan.out) == (0, "No changes. The tenant matches the desired state.\n"), plan
    # The example differs from the tenant, so a plan that compares nothing would be caught here.
    assert cli("plan", str(NORTHWIND), "--detailed-exitcode").code == 2
