"""Numbers from a saved plan cannot switch a safety limit off (issue 17, defect 1), end to end."""

from __future__ import annotations

import json
import math

import pytest
from e2e_support import NORTHWIND

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("share", [math.nan, "NaN"])
def test_a_saved_plan_with_a_nan_share_limit_is_refused_and_writes_nothing(
    share, fresh, cli_for, tmp_path
):
    from bridge import planfile
    from bridge.plan import RemoveGroupAssignment

    cli = cli_for(fresh)
    assert cli("plan", str(NORTHWIND), "--out", "reviewed.plan").code == 0
    path = tmp_path / "reviewed.plan"
    # A plan that moves more than 10% of the users, its limit NaN and its digest recomputed:
    # min(NaN, 0.1) is NaN and "share > NaN" is never true, so it used to apply.
    data = json.loads(path.read_text())
    gid = fresh.tenant.groups_named("Physicians")[0]["id"]
    data["changes"] = [RemoveGroupAssignment(gid, "Physicians", "Clinical", 2).data()]
    data["safety"]["max_user_change_share"] = share
    data["digest"] = planfile.digest(data)
    path.write_text(json.dumps(data))
    refused = cli("apply", "--plan", "reviewed.plan", "--auto-approve")
    assert refused.code == 1, refused
    assert "reviewed.plan:" in refused.err and "Traceback" not in refused.err, refused
    assert fresh.stats()["writes"] == 0
