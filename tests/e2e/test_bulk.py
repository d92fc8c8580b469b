"""Direct assignments at hospital scale: 12,000 users in one file go out in bulk requests (1,000
users each), never one request per user, and the journal still has a line per user."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import pytest
from e2e_support import journal_lines

from bridge.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.e2e

USERS = 12_000
PER_REQUEST = 1_000  # docs/wire.md: bulk assign takes up to 1,000 entries
ASSIGN = "POST /v1.0/admin/teams/policy/userAssignments/assign"
GRANT_ONE = "PATCH /Skype.Policy/users/{user}/policies/TeamsMessagingPolicy"


@pytest.fixture
def big() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(users=USERS, seed=7)) as sb:
        yield sb


def test_twelve_thousand_direct_assignments_in_a_dozen_requests(big, cli_for, tmp_path):
    upns = list(big.tenant.upns)
    assert len(upns) == USERS
    already = {
        uid for uid, policy in big.tenant.direct_assignments().items() if policy == "Kitchen"
    }
    assert not already
    lines = [
        "policies:",
        "  Kitchen: {AllowGiphy: false}  # as the tenant has it: only assignments change",
        "safety:",
        "  max_user_change_share: 100%",
        "  protect_clinical_settings: false  # Kitchen has priority notifications off",
        "assignments:",
        "  users:",
        *(f"    - {{user: '{upn}', policy: Kitchen}}" for upn in upns),
    ]
    (tmp_path / "everyone.yaml").write_text("\n".join(lines) + "\n")
    cli = cli_for(big)

    result = cli("apply", "everyone.yaml", "--auto-approve", "--journal", "j.jsonl", timeout=120)
    assert result.code == 0, result
    assert (
        f"Apply ok: {USERS} applied (verified), 0 pending, 0 failed, 0 not attempted, of {USERS} "
        f"({USERS // PER_REQUEST} write requests"
    ) in result.out, result
    stats = big.stats()
    assert stats["requests"].get(ASSIGN) == math.ceil(USERS / PER_REQUEST)
    assert GRANT_ONE not in stats["requests"]
    assert stats["writes"] == math.ceil(USERS / PER_REQUEST)
    assert set(big.tenant.direct_assignments().values()) == {"Kitchen"}
    assert len(big.tenant.direct_assignments()) == USERS

    journal = journal_lines(tmp_path / "j.jsonl")
    per_user = Counter(
        (x["change"]["user"], x["result"])
        for x in journal
        if x["event"] == "change"
        and x["change"]["kind"] == "set_user_assignment"
        and not x["change"].get("bulk")
    )
    assert len(per_user) == USERS
    assert set(per_user.values()) == {1}
    assert {result for _, result in per_user} == {"ok"}
    bulk = [x for x in journal if x["event"] == "change" and x["change"].get("bulk")]
    # The bulk step is journaled when it starts and when it ends (with its request count).
    assert [(x["result"], x["user_count"]) for x in bulk] == [("started", USERS), ("ok", USERS)]

    again = cli("plan", "everyone.yaml", "--detailed-exitcode", timeout=120)
    assert again.code == 0, again
