"""plan -> apply -> plan, saved plans, a failure in the middle of an apply and the re-run that
converges, and two applies at once on one tenant."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_support import (
    BRIDGE,
    NORTHWIND,
    NORTHWIND_CHANGES,
    NORTHWIND_PLAN_FOOTER,
    NORTHWIND_WRITES,
    RETRY_ATTEMPTS,
    change_key,
    journal_lines,
    write_requests,
)

pytestmark = pytest.mark.e2e

NO_CHANGES = "No changes. The tenant matches the desired state.\n"
APPLY_OK = (
    f"Apply ok: {NORTHWIND_CHANGES} applied (verified), 0 pending, 0 failed, 0 not attempted, "
    f"of {NORTHWIND_CHANGES} ({NORTHWIND_WRITES} write requests"
)


def test_plan_apply_then_plan_shows_no_changes(fresh, cli_for, tmp_path):
    cli = cli_for(fresh)
    before = cli("plan", str(NORTHWIND), "--detailed-exitcode")
    assert before.code == 2, before
    assert before.out.rstrip().endswith(NORTHWIND_PLAN_FOOTER), before
    assert fresh.stats()["writes"] == 0

    applied = cli(
        "apply",
        str(NORTHWIND),
        "--auto-approve",
        "--journal",
        "j.jsonl",
        "--ticket",
        "CHG123",
        "--reason",
        "palliative care: no memes",
    )
    assert applied.code == 0, applied
    assert APPLY_OK in applied.out, applied
    assert fresh.stats()["writes"] == NORTHWIND_WRITES
    assert fresh.tenant.get_policy("Tag:Palliative Care")["AllowMemes"] is False

    after = cli("plan", str(NORTHWIND), "--detailed-exitcode")
    assert (after.code, after.out) == (0, NO_CHANGES), after
    again = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    assert (again.code, again.out) == (0, NO_CHANGES), again
    assert fresh.stats()["writes"] == NORTHWIND_WRITES

    # One run in the journal, every change in it once and ok.
    lines = journal_lines(tmp_path / "j.jsonl")
    assert [x["event"] for x in lines if x["event"] != "change"] == ["run_started", "run_finished"]
    assert lines[-1]["result"] == "ok" and lines[-1]["applied"] == NORTHWIND_CHANGES
    ok = [x for x in lines if _planned(x) and x["result"] == "ok"]
    assert len(ok) == NORTHWIND_CHANGES
    assert {x["tenant"] for x in lines} == {fresh.tenant_id}
    # Who ran it and why, for the change-control file: the OS user, the token's app id (the
    # sandbox's client id, never a secret), the ticket and the reason.
    started = lines[0]
    assert started["ticket"] == "CHG123" and started["reason"] == "palliative care: no memes"
    assert started["operator"] and started["host"], started
    assert started["app_id"] == cli._env(None)["AZURE_CLIENT_ID"], started
    # Each single write carries the correlation id it was sent with, for Microsoft's logs.
    single = [x for x in ok if x["change"]["kind"] != "set_user_assignment"]
    assert single and all(len(x["correlation_id"] or "") == 36 for x in single), single
    # So do the bulk call and its users (one request), and the removal half of the re-rank.
    extra = [x for x in lines if x["event"] == "change" and not _planned(x)]
    assert [(x["change"]["kind"], x["result"]) for x in extra] == [
        ("remove_group_assignment", "ok"),
        ("set_user_assignment", "started"),
        ("set_user_assignment", "ok"),
    ]
    users = [x for x in ok if x["change"]["kind"] == "set_user_assignment"]
    assert {x["correlation_id"] for x in users} == {extra[-1]["correlation_id"]} != {None}


def _planned(line):
    """A journal line for one of the plan's changes (not a bulk summary or a re-rank's half)."""
    change = line.get("change") or {}
    return line["event"] == "change" and not change.get("bulk") and not change.get("part_of")


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
def test_answering_no_at_the_prompt_exits_1_and_writes_nothing(fresh, cli_for, tmp_path):
    """As Terraform: declining is not success (nothing that was asked for was applied)."""
    import os
    import pty
    import subprocess

    cli = cli_for(fresh)
    primary, secondary = pty.openpty()
    try:
        os.write(primary, b"n\n")  # waits in the terminal's buffer for the prompt
        proc = subprocess.run(
            [*BRIDGE, "apply", str(NORTHWIND), "--journal", "j.jsonl"],
            env=cli._env(None),
            cwd=tmp_path,
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    # The prompt names the tenant, as people know it: test and production are told apart.
    assert "Apply these changes to Northwind Regional Health (northwind-health.org)?" in (
        proc.stdout
    )
    assert "Apply cancelled; nothing was changed." in proc.stdout
    assert fresh.stats()["writes"] == 0


def test_apply_refuses_without_a_terminal_or_auto_approve(fresh, cli_for):
    result = cli_for(fresh)("apply", str(NORTHWIND))
    assert result.code == 1, result
    assert "there is no terminal" in result.err and "--auto-approve" in result.err, result
    # A saved plan is refused the same way: the message must not offer it as a way out.
    assert "(or apply a saved plan with --plan)" not in result.err, result
    assert fresh.stats()["writes"] == 0


def test_saved_plan_applies_and_a_stale_one_is_refused(fresh, cli_for, tmp_path):
    cli = cli_for(fresh)
    saved = cli("plan", str(NORTHWIND), "--out", "reviewed.plan", "--detailed-exitcode")
    assert saved.code == 2, saved
    assert "plan saved to reviewed.plan" in saved.err
    data = json.loads((tmp_path / "reviewed.plan").read_text())
    assert data["schema_version"] == 1 and len(data["changes"]) == NORTHWIND_CHANGES

    # Someone changes the tenant after the review: the saved plan no longer describes it.
    fresh.tenant.update_policy("Tag:Pharmacy", {"AllowGiphy": True})
    stale = cli("apply", "--plan", "reviewed.plan", "--auto-approve", "--journal", "j.jsonl")
    assert stale.code == 1, stale
    assert "error: the tenant changed since this plan was made: run plan again" in stale.err
    assert fresh.stats()["writes"] == 0
    assert not (tmp_path / "j.jsonl").exists()

    replanned = cli("plan", str(NORTHWIND), "--out", "reviewed.plan")
    assert replanned.code == 0, replanned
    applied = cli("apply", "--plan", "reviewed.plan", "--auto-approve", "--journal", "j.jsonl")
    assert applied.code == 0, applied
    assert APPLY_OK in applied.out, applied
    assert cli("plan", str(NORTHWIND), "--detailed-exitcode").code == 0

    # Applied once: the same saved plan is now stale too.
    replay = cli("apply", "--plan", "reviewed.plan", "--auto-approve")
    assert replay.code == 1 and "the tenant changed since this plan was made" in replay.err
    assert fresh.stats()["writes"] == NORTHWIND_WRITES


# The write that fails, how it is described, and how many changes the plan's order puts before it.
FAULTS = {
    "policy create": (
        "POST",
        "/Skype.Policy/configurations/TeamsMessagingPolicy",
        "create policy Palliative Care",
        3,
    ),
    "policy update": (
        "PUT",
        "/Skype.Policy/configurations/TeamsMessagingPolicy/configuration/Tag:Students",
        "update policy Students",
        4,
    ),
    "group assignment": (
        "PATCH",
        "/Skype.Policy/groupPolicyAssignments/[^/]+/policyTypes/TeamsMessagingPolicy",
        "assign group Nursing to Nursing (rank 3)",
        5,
    ),
    "bulk users": (
        "POST",
        "/v1.0/admin/teams/policy/userAssignments/assign",
        "assign user locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com to Clinical",
        6,
    ),
}


@pytest.mark.parametrize("step", list(FAULTS))
def test_failure_mid_apply_then_rerun_converges(step, fresh, cli_for, tmp_path):
    method, path, described, before = FAULTS[step]
    cli = cli_for(fresh)
    fresh.inject(method, path, status=503, times=None)  # every attempt fails

    failed = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    assert failed.code == 1, failed
    assert f"error: {before} of {NORTHWIND_CHANGES} changes applied; failed: {described}" in (
        failed.err
    ), failed
    not_attempted = NORTHWIND_CHANGES - before - (2 if step == "bulk users" else 1)
    assert f"not attempted: {not_attempted}; " in failed.err
    # Retried, then gave up; a failed re-rank also tried (3 times, and failed) to put the old
    # one back.
    attempts = RETRY_ATTEMPTS * (4 if step == "group assignment" else 1)
    assert fresh.stats()["status"][503] == attempts
    if step == "group assignment":
        assert "back failed too, 3 time(s)" in failed.err, failed
        assert "group Nursing has NO messaging policy now" in failed.err, failed
        # The least override the re-run needs, not --force (which lifts every check).
        assert (
            "run 'teams-bridge apply FILE --max-user-change-share 0.274' to assign it again"
            in failed.err
        ), failed
        assert "--force" not in failed.err, failed
    else:
        assert "run apply again to converge" in failed.err, failed
    first_writes = fresh.stats()["writes"]

    fresh.clear_injections()
    force: list[str] = []
    if step == "group assignment":
        # The failed re-rank removed the group's old assignment and the service refused it back,
        # so its members are on Global now; putting them back moves more users than the 10%.
        refused = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
        assert refused.code == 1, refused
        assert "82 of 300 users (27.3%) would get a different policy" in refused.err, refused
        force = ["--max-user-change-share", "0.274"]  # as the failure advised: enough
    resumed = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl", *force)
    assert resumed.code == 0, resumed
    assert "Apply ok:" in resumed.out and "0 failed, 0 not attempted" in resumed.out, resumed
    assert cli("plan", str(NORTHWIND), "--detailed-exitcode").code == 0

    # Nothing written twice: both runs together made exactly the writes one clean run makes.
    assert fresh.stats()["writes"] == NORTHWIND_WRITES
    assert first_writes < NORTHWIND_WRITES
    lines = journal_lines(tmp_path / "j.jsonl")
    runs = [x for x in lines if x["event"] == "run_finished"]
    assert [r["result"] for r in runs] == ["failed", "ok"]
    ok = Counter(change_key(x["change"]) for x in lines if _planned(x) and x["result"] == "ok")
    assert len(ok) == NORTHWIND_CHANGES and set(ok.values()) == {1}, ok
    # Nothing lost: what the file asks for is in the tenant.
    direct = fresh.tenant.direct_assignments()
    assert sorted(direct.values()).count("Nursing") == 1
    assert [p for p in fresh.tenant.policy_names() if p.casefold() == "palliative care"] == [
        "Palliative Care"
    ]


def _wait_for_holder(lock_dir: Path, pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The holder's record sits beside the lock file (bridge.lock.holder_path).
        for path in lock_dir.glob("teams-bridge-*.lock.holder"):
            with contextlib.suppress(OSError):
                if f'"pid": {pid}' in path.read_text():
                    return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never took the apply lock in {lock_dir}")


def _apply_while_another_holds_the_lock(fresh, cli_for, tmp_path, lock_timeout):
    """The first apply holds the lock about 2 s (its first write is answered 503 with
    Retry-After: 2, which it honours); the second starts once the lock is taken."""
    cli = cli_for(fresh)
    lock_dir = tmp_path / "locks"
    fresh.inject("PUT", ".*/configuration/Global", status=503, retry_after=2, times=1)
    common = ["--auto-approve", "--lock-dir", str(lock_dir), "--journal", "j.jsonl"]
    first = cli.start("apply", str(NORTHWIND), *common)
    try:
        _wait_for_holder(lock_dir, first.pid)
        second = cli("apply", str(NORTHWIND), *common, "--lock-timeout", str(lock_timeout))
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert APPLY_OK in out
    return second


def test_second_apply_gives_up_on_the_lock(fresh, cli_for, tmp_path):
    second = _apply_while_another_holds_the_lock(fresh, cli_for, tmp_path, lock_timeout=0.5)
    assert second.code == 1, second
    assert f"error: another teams-bridge apply holds the lock for tenant {fresh.tenant_id}" in (
        second.err
    ), second
    assert fresh.stats()["writes"] == NORTHWIND_WRITES  # only the first wrote


def test_second_apply_waits_for_the_lock_and_writes_nothing(fresh, cli_for, tmp_path):
    second = _apply_while_another_holds_the_lock(fresh, cli_for, tmp_path, lock_timeout=30)
    assert fresh.stats()["writes"] == NORTHWIND_WRITES  # only the first wrote
    assert (second.code, second.out) == (0, NO_CHANGES), second


# --------------------------------------------------------------------------- review fixes


def test_an_edited_saved_plan_is_refused_and_its_limits_cannot_loosen(fresh, cli_for, tmp_path):
    from bridge import planfile

    cli = cli_for(fresh)
    assert cli("plan", str(NORTHWIND), "--out", "reviewed.plan").code == 0
    path = tmp_path / "reviewed.plan"
    original = planfile.read_plan(path).plan
    data = json.loads(path.read_text())
    data["safety"]["max_user_change_share"] = 1.0
    path.write_text(json.dumps(data))
    edited = cli("apply", "--plan", "reviewed.plan", "--auto-approve")
    assert edited.code == 1, edited
    assert "the plan file was changed after it was made: run plan --out again" in edited.err
    assert fresh.stats()["writes"] == 0

    # Somebody who recomputes the digest still gets the built-in limits: a plan that removes
    # Nursing's assignment moves more than 10% of the users, and more than the default floor
    # of 50 (a floor raised in the file does not count either).
    data = json.loads(planfile.dumps(original))
    gid = fresh.tenant.groups_named("Nursing")[0]["id"]
    rank = next(a["Rank"] for a in fresh.tenant.list_group_assignments() if a["GroupId"] == gid)
    data["changes"] = [
        {
            "kind": "remove_group_assignment",
            "group_id": gid,
            "group": "Nursing",
            "from": {"policy": "Nursing", "rank": rank},
        }
    ]
    data["safety"] = {
        "max_policy_deletes": 99,
        "max_user_change_share": 1.0,
        "user_change_floor": 1000000,
    }
    data["digest"] = planfile.digest(data)
    path.write_text(json.dumps(data))
    loosened = cli("apply", "--plan", "reviewed.plan", "--auto-approve")
    assert loosened.code == 1, loosened
    assert "over the limit of 10% (it applies when more than 50 users move)" in loosened.err
    assert fresh.stats()["writes"] == 0
    # Only apply's own options loosen them.
    lifted = cli(
        "apply", "--plan", "reviewed.plan", "--auto-approve", "--user-change-floor", "1000"
    )
    assert lifted.code == 0, lifted


USER_FILE = """
policies:
  Kitchen: {{}}
  Clinical: {{}}
assignments:
  users:
    - {{user: nina.murphy@northwind-health.org, policy: {policy}}}
"""


def test_a_saved_plan_made_before_another_apply_is_refused(fresh, cli_for, tmp_path):
    cli = cli_for(fresh)
    (tmp_path / "a.yaml").write_text(USER_FILE.format(policy="Kitchen"))
    (tmp_path / "b.yaml").write_text(USER_FILE.format(policy="Clinical"))
    fresh.configure(propagation_delay=60)
    assert cli("plan", "b.yaml", "--out", "b.plan").code == 0
    other = cli(
        "apply",
        "a.yaml",
        "--auto-approve",
        "--force",
        "--journal",
        "j.jsonl",
        "--verify-timeout",
        "1",
    )
    assert other.code == 0 and "1 pending" in other.out, other
    writes = fresh.stats()["writes"]

    # Reads do not show the other apply's grant yet, so the tenant checksum still matches.
    late = cli("apply", "--plan", "b.plan", "--auto-approve", "--force", "--journal", "j.jsonl")
    assert late.code == 1, late
    assert "this plan was made at" in late.err and "shows a later apply to this tenant" in late.err
    assert "run plan --out again" in late.err, late
    assert fresh.stats()["writes"] == writes


# (method, path, status, resent): ``resent`` counts writes the HTTP client sends again by itself
# because they are idempotent (a merge PUT, a bulk grant): the same change again, nothing created.
@pytest.mark.parametrize(
    "method, path, status, resent",
    [
        ("POST", "/Skype.Policy/configurations/TeamsMessagingPolicy", 500, 0),
        ("PUT", "/Skype.Policy/configurations/TeamsMessagingPolicy/configuration/.*", 0, 1),
        ("PATCH", "/Skype.Policy/groupPolicyAssignments/.*", 503, 0),
        ("PATCH", "/Skype.Policy/groupPolicyAssignments/.*", 0, 0),
        ("DELETE", "/Skype.Policy/groupPolicyAssignments/.*", 500, 0),
        ("POST", "/v1.0/admin/teams/policy/userAssignments/assign", 0, 1),
    ],
    ids=[
        "create-500",
        "update-drop",
        "group-add-503",
        "group-add-drop",
        "rerank-remove-500",
        "bulk-drop",
    ],
)
def test_writes_whose_answer_is_lost_converge_without_doing_anything_twice(
    method, path, status, resent, fresh, cli_for, tmp_path
):
    cli = cli_for(fresh)
    fresh.inject(method, path, status=status, after=True)
    first = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    assert first.code in (0, 1), first
    assert fresh.stats()["faults"] == 1, fresh.stats()
    runs = 1
    while cli("plan", str(NORTHWIND), "--detailed-exitcode").code == 2:
        again = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
        assert again.code == 0, again
        runs += 1
        assert runs <= 2, "a second apply must converge"
    # Every change made once: as many successful writes as one clean run makes.
    assert fresh.stats()["writes"] == NORTHWIND_WRITES + resent, (first, fresh.stats())
    assert [p for p in fresh.tenant.policy_names() if p.casefold() == "palliative care"] == [
        "Palliative Care"
    ]


UNPROTECTED_FILE = """
policies:
  Clinical: {ReadReceiptsEnabledType: None}
safety:
  protect_clinical_settings: false
"""


def test_plan_out_says_when_apply_plan_will_not_use_the_files_looser_limits(
    fresh, cli_for, tmp_path
):
    cli = cli_for(fresh)
    (tmp_path / "off.yaml").write_text(UNPROTECTED_FILE)
    shown = cli("plan", "off.yaml")
    assert shown.code == 0 and "apply --plan will" not in shown.err, shown  # no --out: no note
    saved = cli("plan", "off.yaml", "--out", "off.plan")
    assert saved.code == 0, saved
    assert "note: apply --plan will not use the file's safety.protect_clinical_settings" in (
        saved.err
    ), saved
    assert "warning: apply --plan will refuse this saved plan unless given the option" in (
        saved.err
    )
    assert "turns ReadReceiptsEnabledType off ('None') in policy Clinical" in saved.err
    refused = cli("apply", "--plan", "off.plan", "--auto-approve")
    assert refused.code == 1 and "over a safety limit" in refused.err, refused
    assert fresh.stats()["writes"] == 0


GROUP_ROUTE = ".*/Skype.Policy/groupPolicyAssignments/.*"


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
def test_kill_9_between_a_reranks_removal_and_its_add_is_finished_by_the_next_run(
    fresh, cli_for, tmp_path
):
    """The re-rank's removal went through, the process was killed before its add, and reads
    lag (60 s here; up to hours on the service), so they still show the old row. The next run's
    removal answers 404: that is the removal done, and the add follows at once, instead of every
    re-run failing until reads catch up while the group has no policy."""
    import signal

    cli = cli_for(fresh)
    fresh.configure(propagation_delay=60)
    fresh.inject("PATCH", GROUP_ROUTE, status=503, times=None)  # the add fails, then is retried
    proc = cli.start("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    deadline = time.monotonic() + 30
    while not any(r.startswith("PATCH") for r in write_requests(fresh)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # while it waits to retry the add
    proc.communicate()
    fresh.clear_injections()
    nursing = fresh.tenant.groups_named("Nursing")[0]["id"]
    shown = {a["GroupId"]: a for a in fresh.tenant.list_group_assignments()}
    assert shown[nursing]["PolicyName"] == "Nursing", "reads still show the old row"

    again = cli(
        "apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl", "--verify-timeout", "1"
    )
    assert again.code == 0, again
    assert "has no TeamsMessagingPolicy assignment" not in again.out + again.err, again
    assert "assign group Nursing to Nursing" in again.out and "pending" in again.out, again
    removal = [
        x
        for x in journal_lines(tmp_path / "j.jsonl")
        if x["event"] == "change" and x["change"].get("already_removed")
    ]
    assert [x["change"]["group_id"] for x in removal] == [nursing]

    # A run while reads still lag: the add is held back (pending), the group is not removed and
    # re-added again (the direct grants, idempotent, may be sent again).
    def group_writes():
        return {r: n for r, n in write_requests(fresh).items() if "groupPolicyAssignments" in r}

    sent = group_writes()
    held = cli(
        "apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl", "--verify-timeout", "1"
    )
    assert held.code == 0 and "pending" in held.out, held
    assert group_writes() == sent

    # Once reads catch up, the tenant matches the file: the group got its policy.
    fresh.tenant.clock = lambda: time.monotonic() + 3600
    after = cli("plan", str(NORTHWIND), "--detailed-exitcode")
    assert (after.code, after.out) == (0, NO_CHANGES), after


def test_plan_and_apply_reach_the_same_verdict_reading_the_same_members(fresh, cli_for, tmp_path):
    """Nursing's group to the Kitchen policy: plan reads the members apply reads, so it lists
    every reason apply refuses with (the share of users included) and the people it moves."""
    cli = cli_for(fresh)
    text = NORTHWIND.read_text().replace(
        "{group: Nursing, policy: Nursing, rank: 3}", "{group: Nursing, policy: Kitchen, rank: 3}"
    )
    (tmp_path / "kitchen.yaml").write_text(text)
    planned = cli("plan", "kitchen.yaml", "--format", "json")
    assert planned.code == 0, planned
    data = json.loads(planned.out)
    reasons = data["needs_force"]
    assert any("would get a different policy, over the limit of 10%" in r for r in reasons)
    assert data["users_moved"] > 50 and data["users_total"] == 300, data
    text_plan = cli("plan", "kitchen.yaml")
    assert (
        f"this plan gives {data['users_moved']} of 300 users a different effective policy"
        in text_plan.err
    ), text_plan

    refused = cli("apply", "kitchen.yaml", "--auto-approve")
    assert refused.code == 1, refused
    assert refused.err.count("\n  - ") == len(reasons), refused
    for reason in reasons:
        assert f"  - {reason}\n" in refused.err, (reason, refused)
    assert fresh.stats()["writes"] == 0


def test_an_endpoint_that_refuses_connections_is_named_with_what_to_check(ro, cli_for):
    import socket

    with socket.socket() as s:  # a port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli_for(ro)(
        "plan", str(NORTHWIND), env={"BRIDGE_TEAMS_URL": f"https://127.0.0.1:{port}"}
    )
    assert result.code == 1, result
    (error,) = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert f"could not reach Teams admin API at 127.0.0.1:{port} (" in error, result
    assert "the connection was refused; check the network and any proxy (HTTPS_PROXY)" in error
    assert "BRIDGE_TEAMS_URL (or --cloud / BRIDGE_CLOUD)" in error, result
    assert "urllib3" not in result.err and "HTTPSConnectionPool" not in result.err, result
