"""Matching CPU: 100,000 people against 20 roles (issue 11's budget: under 0.5 s of CPU).

    python scripts/bench_roles.py [--users 100000] [--roles 20]

People get hospital-like attributes (16 departments, 60 job titles, an employee type, a unique
extension attribute on a tenth of them, a few disabled accounts and guests); roles mix lists,
wildcards, except clauses and an extension attribute, as a real file would.
"""

from __future__ import annotations

import argparse
import random
import time

from bridge.roles import Role, RoleMatcher, select

DEPARTMENTS = [f"Department {i}" for i in range(14)] + ["Nursing", "Emergency Medicine"]
TITLES = [f"{kind} {i}" for kind in ("Nurse", "Physician", "Porter", "Clerk") for i in range(15)]


def people(n: int, rng: random.Random) -> list[tuple[str, dict[str, object]]]:
    out = []
    for i in range(n):
        attrs: dict[str, object] = {
            "department": rng.choice(DEPARTMENTS),
            "jobTitle": rng.choice(TITLES),
            "employeeType": rng.choice(("Employee", "Employee", "Contractor")),
            "accountEnabled": i % 97 != 0,
            "userType": "Guest" if i % 211 == 0 else "Member",
        }
        if i % 10 == 0:
            attrs["onPremisesExtensionAttributes.extensionAttribute1"] = f"EMP{i:06d}"
        out.append((f"u{i}", attrs))
    return out


def roles(count: int) -> list[Role]:
    out = [
        Role(
            "Clinicians",
            "Clinical",
            {
                "department": ("Nursing", "Emergency Medicine"),
                "jobTitle": ("*Nurse*", "*Physician*"),
            },
            {"employeeType": ("Contractor",)},
        ),
        Role(
            "Badged", "Clinical", {"onPremisesExtensionAttributes.extensionAttribute1": ("EMP00*",)}
        ),
    ]
    while len(out) < count:
        i = len(out)
        out.append(
            Role(
                f"Role {i}",
                "Support",
                {"department": (DEPARTMENTS[i % 14],), "jobTitle": (f"*{i % 15}",)},
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--roles", type=int, default=20)
    args = parser.parse_args()
    population = people(args.users, random.Random(11))
    rs = roles(args.roles)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        sel = select(rs, population, matcher=RoleMatcher(rs))
        best = min(best, time.process_time() - started)
    print(
        f"{args.users} people x {len(rs)} roles: {best:.3f} s CPU (best of 5), "
        f"{len(sel.by_user)} selected, {len(sel.several)} by several roles"
    )


if __name__ == "__main__":
    main()
