"""apply against a sandbox tenant whose names carry escape sequences, line breaks and bidi
overrides: the plan shown for confirmation, the progress lines and the summary keep them escaped
(an escape sequence in the prompt's plan could hide a line from the reviewer)."""

from __future__ import annotations

import pytest
from test_terminal_escaping import EVIL, assert_terminal_safe

pytestmark = pytest.mark.e2e

GROUP_ID = "0d5a0c1e-5f7b-4e8e-9a53-2f5d7a1b9c01"
USER_ID = "7c1e4b2a-3d9f-4a61-8e0b-5a2c9d4f6e12"


def test_apply_shows_hostile_names_escaped(fresh, cli_for, tmp_path):
    t = fresh.tenant
    upn = f"night{EVIL}@northwind-health.org"
    t.add_user(USER_ID, upn, "Night Nurse", "Nursing")
    t.add_group(GROUP_ID, f"Night ward{EVIL}")
    t.add_member(GROUP_ID, USER_ID)
    t.grant(USER_ID, "Clinical")
    t.update_policy("Tag:Kitchen", {"Description": f"Kitchen{EVIL}"})
    desired = tmp_path / "desired.yaml"
    desired.write_text(
        f"""\
policies:
  Kitchen:
    Description: Kitchen and catering
  Nursing: {{}}
assignments:
  groups:
    - {{group: {GROUP_ID}, policy: Nursing, rank: 9}}
  users:
    - {{user: {USER_ID}, policy: Nursing}}
"""
    )
    cli = cli_for(fresh)
    result = cli("apply", str(desired), "--auto-approve", "--journal", "j.jsonl")
    assert result.code == 0, result
    assert_terminal_safe(result.out)
    assert_terminal_safe(result.err)
    # The plan, as the confirmation prompt shows it.
    assert "+ group 'Night ward\\x1b[2K\\r\\x1b[1A\\n+ forged line\\u202eevil" in result.out
    assert "~ user night\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line\\u202eevil" in result.out
    assert 'Description: "Kitchen\\u001b[2K\\r\\u001b[1A\\n+ forged line' in result.out
    assert "Apply ok: 3 applied" in result.out
    assert t.direct_assignments()[USER_ID] == "Nursing"

    again = cli("plan", str(desired))
    assert again.code == 0 and "No changes." in again.out, again
