"""suggest-roles: departments (then job titles) whose people already share one effective policy
become roles, with the count each would move; the block is a valid desired-file fragment."""

from __future__ import annotations

from factories import tenant

from bridge.desired import parse_desired
from bridge.suggest import render, suggest


def _tenant():  # type: ignore[no-untyped-def]
    people = {i: {"department": "Nursing", "jobTitle": "Nurse"} for i in range(6)}
    people.update(
        {
            6: {"department": "Kitchen", "jobTitle": "Cook"},
            7: {"department": "Kitchen", "jobTitle": "Cook"},
            8: {"department": "Kitchen", "jobTitle": "Cook", "accountEnabled": False},
            9: {"department": "Admin", "jobTitle": "Cook"},
        }
    )
    # Nursing members get Nursing through group 1, one of them has a direct Other: 5 of 6.
    return tenant(
        {"Nursing": {}, "Other": {}, "Kitchen": {}},
        groups=[(1, "Nursing"), (2, "Kitchen")],
        users={0: "Other"},
        members={1: [0, 1, 2, 3, 4, 5], 2: [6, 7, 8, 9]},
        attributes=people,
    )


def test_departments_sharing_a_policy_become_roles_with_their_moves() -> None:
    found = suggest(_tenant(), threshold=0.8, min_people=2)
    assert [(s.attribute, s.value, s.policy, s.people, s.moves) for s in found] == [
        ("department", "Kitchen", "Kitchen", 2, 0),  # the disabled account is not counted
        ("department", "Nursing", "Nursing", 6, 1),
    ]
    assert suggest(_tenant(), threshold=0.95, min_people=2)[-1].value == "Kitchen"
    # Admin's one cook is below min_people as a department, and as a job title once the
    # Kitchen cooks are covered.
    assert all(s.value != "Admin" for s in found)


def test_the_block_pastes_into_a_desired_file() -> None:
    text = render(suggest(_tenant(), 0.8, 2), 0.8)
    doc = "policies:\n  Nursing: {}\n  Kitchen: {}\nassignments:\n" + "".join(
        f"  {line}\n" for line in text.splitlines()
    )
    state = parse_desired(doc)
    assert [(r.name, r.policy, dict(r.where)) for r in state.roles] == [
        ("Kitchen", "Kitchen", {"department": ("Kitchen",)}),
        ("Nursing", "Nursing", {"department": ("Nursing",)}),
    ]
    assert "moves 1" in text
    assert render([], 0.95).startswith("# no department or job title")
