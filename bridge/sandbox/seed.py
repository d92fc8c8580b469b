"""The fictional hospital the sandbox serves: Northwind Regional Health.

Deterministic for a seed: the same ``SandboxConfig`` (users, seed, policies, group_assignments,
direct_share) always builds the same tenant, ids included.
"""

from __future__ import annotations

import json
import random
import uuid
from importlib import resources
from typing import Any

from .config import SandboxConfig
from .tenant import MESSAGING, USER_CONTRACTOR, USER_DISABLED, USER_GUEST, Tenant

TENANT_NAME = "Northwind Regional Health"
TENANT_DOMAIN = "northwind-health.onmicrosoft.com"
MAIL_DOMAIN = "northwind-health.org"
_NAMESPACE = uuid.UUID("0b6f2d1e-3c55-4c1e-9a57-6e1f4a1c2b7d")

# Custom policies: overrides of the new-policy defaults. Nursing keeps read receipts user
# controlled, so a baseline asking for "Everyone" shows drift.
CUSTOM_POLICIES: dict[str, dict[str, Any]] = {
    "Clinical": {
        "Description": "Physicians and clinical staff",
        "ReadReceiptsEnabledType": "Everyone",
        "AllowPriorityMessages": True,
        "GiphyRatingType": "Strict",
        "AllowMemes": False,
    },
    "Nursing": {
        "Description": "Nursing staff",
        "ReadReceiptsEnabledType": "UserPreference",
        "AllowPriorityMessages": True,
        "GiphyRatingType": "Strict",
    },
    "Pharmacy": {
        "Description": "Pharmacists and technicians",
        "ReadReceiptsEnabledType": "Everyone",
        "AllowPriorityMessages": True,
        "AllowGiphy": False,
    },
    "Support Staff": {
        "Description": "Facilities, transport and administration",
        "ReadReceiptsEnabledType": "Everyone",
        "AllowPriorityMessages": False,
        "AllowGiphy": False,
    },
    "Kitchen": {
        "Description": "Kitchen and catering",
        "ReadReceiptsEnabledType": "None",
        "AllowPriorityMessages": False,
        "AllowGiphy": False,
        "AllowMemes": False,
        "AllowStickers": False,
        "AudioMessageEnabledType": "ChatsOnly",
    },
    "Emergency Department": {
        "Description": "Emergency department: every message is on the record",
        "ReadReceiptsEnabledType": "Everyone",
        "AllowPriorityMessages": True,
        "AllowUserEditMessage": False,
        "AllowUserDeleteMessage": False,
        "AllowUserDeleteChat": False,
        "GiphyRatingType": "Strict",
    },
    "Students": {
        "Description": "Students on placement",
        "ReadReceiptsEnabledType": "UserPreference",
        "AllowPriorityMessages": False,
        "ChatPermissionRole": "Limited",
        "AllowUserDeleteChat": False,
    },
}

# (group, department, share of users, messaging policy or None); rank = order of appearance
GROUPS: list[tuple[str, str, float, str | None]] = [
    ("Emergency Department", "Emergency Medicine", 0.08, "Emergency Department"),
    ("Physicians", "Medicine", 0.14, "Clinical"),
    ("Residents", "Graduate Medical Education", 0.05, "Students"),
    ("Nursing", "Nursing", 0.28, "Nursing"),
    ("Pharmacy", "Pharmacy", 0.04, "Pharmacy"),
    ("Radiology", "Radiology", 0.05, "Clinical"),
    ("Facilities", "Facilities", 0.09, "Support Staff"),
    ("Kitchen", "Food Services", 0.06, "Kitchen"),
    ("Volunteers", "Volunteer Services", 0.02, None),
    ("Volunteers", "Patient Experience", 0.02, None),
]
# Departments whose people are in no group (they get Global).
UNGROUPED = [("Administration", 0.11), ("Finance", 0.04), ("Information Technology", 0.02)]


# Guests (UPNs with #EXT#) and the index in GROUPS of the group they join.
GUESTS = [
    ("Locum Cardiologist", "locum.cardio_gmail.com#EXT#@" + TENANT_DOMAIN, 1),
    ("Agency Nurse", "agency.nurse_outlook.com#EXT#@" + TENANT_DOMAIN, 3),
]


# Job titles by department (the first is the most common). Residents are "Resident Physician":
# junior doctors, who need priority notifications as much as any clinician.
JOB_TITLES: dict[str, tuple[str, ...]] = {
    "Emergency Medicine": (
        "Emergency Nurse",
        "Emergency Physician",
        "Paramedic",
        "Emergency Department Technician",
    ),
    "Medicine": ("Attending Physician", "Hospitalist", "Physician Assistant"),
    "Graduate Medical Education": ("Resident Physician", "Chief Resident"),
    "Nursing": (
        "Registered Nurse",
        "Charge Nurse",
        "Nurse Practitioner",
        "Licensed Practical Nurse",
        "Nursing Assistant",
    ),
    "Pharmacy": ("Pharmacist", "Pharmacy Technician"),
    "Radiology": ("Radiologic Technologist", "Radiologist"),
    "Facilities": ("Maintenance Technician", "Electrician", "Facilities Manager"),
    "Food Services": ("Cook", "Dietary Aide", "Food Service Supervisor"),
    "Volunteer Services": ("Volunteer",),
    "Patient Experience": ("Patient Liaison", "Volunteer Coordinator"),
    "Administration": ("Administrative Assistant", "Medical Secretary", "Director"),
    "Finance": ("Accountant", "Billing Specialist"),
    "Information Technology": ("Service Desk Analyst", "Systems Analyst"),
}
# Guests (agency and locum staff signed in from elsewhere): about 1 in GUEST_EVERY of a
# department's people; disabled accounts (leavers not yet deleted): 1 in DISABLED_EVERY.
GUEST_EVERY, DISABLED_EVERY, CONTRACTOR_EVERY = 60, 50, 25


def tenant_id_for(seed: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"tenant:{seed}"))


def client_id_for(seed: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"app:{seed}"))


def build_hospital(cfg: SandboxConfig) -> Tenant:
    """The seeded tenant for ``cfg`` (policies, groups, users, memberships, assignments)."""
    rng = random.Random(cfg.seed)
    names = json.loads(resources.files(__package__).joinpath("data/names.json").read_text())

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    tenant = Tenant(
        tenant_id_for(cfg.seed),
        TENANT_NAME,
        [(TENANT_DOMAIN, False), (MAIL_DOMAIN, True)],
        client_id_for(cfg.seed),
    )
    for name, settings in CUSTOM_POLICIES.items():
        tenant.create_policy({"Identity": f"Tag:{name}", **settings})
    extra_policies: list[str] = []
    while cfg.policies is not None and len(tenant.policy_names()) < cfg.policies:
        name = f"Policy {len(extra_policies) + 1:03d}"
        read_receipts = ("Everyone", "UserPreference", "None")[len(extra_policies) % 3]
        tenant.create_policy(
            {
                "Identity": f"Tag:{name}",
                "Description": f"Generated policy {len(extra_policies) + 1}",
                "ReadReceiptsEnabledType": read_receipts,
                "AllowPriorityMessages": len(extra_policies) % 2 == 0,
            }
        )
        extra_policies.append(name)

    group_ids: list[str] = []
    for name, *_ in GROUPS:
        group_ids.append(new_id())
        tenant.add_group(group_ids[-1], name)
    assigned = [(gid, g[3]) for gid, g in zip(group_ids, GROUPS, strict=False) if g[3]]
    wanted = cfg.group_assignments if cfg.group_assignments is not None else len(assigned)
    extra_groups: list[str] = []
    while len(assigned) + len(extra_groups) < wanted:
        extra_groups.append(new_id())
        tenant.add_group(extra_groups[-1], f"Group {len(extra_groups):03d}")
    pool = extra_policies or list(CUSTOM_POLICIES)
    assigned += [(gid, pool[i % len(pool)]) for i, gid in enumerate(extra_groups)]
    for gid, policy in assigned[:wanted]:
        tenant.add_group_assignment(gid, MESSAGING, policy)
    # Another policy type, so readers must keep only TeamsMessagingPolicy rows.
    tenant.add_group_assignment(group_ids[1], "TeamsMeetingPolicy", "AllOn")

    _add_users(tenant, cfg, rng, new_id, group_ids, extra_groups, names["first"], names["last"])

    count = tenant.user_count
    direct = min(count, 5) if cfg.direct_share is None else round(count * cfg.direct_share)
    direct_policies = ["Clinical", "Emergency Department", "Support Staff", *extra_policies]
    for i, pos in enumerate(sorted(rng.sample(range(count), direct))):
        tenant.grant(tenant.user_ids[pos], direct_policies[i % len(direct_policies)])
    return tenant


def _add_users(
    tenant: Tenant,
    cfg: SandboxConfig,
    rng: random.Random,
    new_id: Any,
    group_ids: list[str],
    extra_groups: list[str],
    first_names: list[str],
    last_names: list[str],
) -> None:
    slots: list[tuple[str | None, str]] = [
        (gid, dept) for gid, (_, dept, _, _) in zip(group_ids, GROUPS, strict=False)
    ]
    slots += [(None, dept) for dept, _ in UNGROUPED]
    weights = [g[2] for g in GROUPS] + [w for _, w in UNGROUPED]
    physicians = group_ids[1]
    seen: dict[str, int] = {}
    members = cfg.users - min(len(GUESTS), cfg.users)
    choices = rng.choices(range(len(slots)), weights, k=members)
    for n, slot in enumerate(choices):
        first, last = rng.choice(first_names), rng.choice(last_names)
        base = f"{first}.{last}".lower()
        seen[base] = seen.get(base, 0) + 1
        local = base if seen[base] == 1 else f"{base}{seen[base]}"
        gid, dept = slots[slot]
        pos = tenant.add_user(new_id(), f"{local}@{MAIL_DOMAIN}", f"{first} {last}", dept)
        if gid is not None:
            tenant.add_member(gid, pos)
            # Emergency physicians are in Physicians too: rank decides which policy wins.
            if gid == group_ids[0] and n % 2 == 0:
                tenant.add_member(physicians, pos)
        if extra_groups and n % 50 == 0:
            tenant.add_member(extra_groups[(n // 50) % len(extra_groups)], pos)
    for display, upn, group in GUESTS[: cfg.users - members]:
        pos = tenant.add_user(new_id(), upn, display, "Guests")
        tenant.add_member(group_ids[group], pos)
    _describe_users(tenant, cfg.seed)


def _describe_users(tenant: Tenant, seed: int) -> None:
    """Job titles, guests, contractors and disabled accounts, from their own random stream so
    the people (names, departments, groups) stay those of the seed."""
    rng = random.Random(f"{seed}:who")
    guests = {upn.casefold(): title for title, upn, _ in GUESTS}
    names = tenant.department_names
    for pos in range(tenant.user_count):
        upn = tenant.upns[pos].casefold()
        if upn in guests:
            tenant.describe_user(pos, guests[upn], USER_GUEST)
            continue
        titles = JOB_TITLES.get(names[tenant.departments[pos]], ("Staff",))
        # The first title is the most common: half the people, the rest share the other half.
        title = titles[0] if rng.random() < 0.5 else rng.choice(titles)
        pick = rng.randrange(GUEST_EVERY * DISABLED_EVERY * CONTRACTOR_EVERY)
        flags = 0
        if pick % GUEST_EVERY == 0:
            flags |= USER_GUEST
        if pick % DISABLED_EVERY == 1:
            flags |= USER_DISABLED
        if pick % CONTRACTOR_EVERY == 2:
            flags |= USER_CONTRACTOR
        tenant.describe_user(pos, title, flags)
