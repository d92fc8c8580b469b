"""Healthcare rules: each has a case that trips it, one that does not, and its switch."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import DesiredStateError
from bridge.rules import RULE_IDS, run_rules
from bridge.state import (
    DesiredPolicy,
    DesiredState,
    GroupAssignment,
    Policy,
    RulesConfig,
    TenantState,
    UserAssignment,
)

OK = {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": True}


def tenant(
    policies: dict[str, dict[str, Any]],
    groups: dict[str, str] | None = None,
    users: dict[str, str] | None = None,
) -> TenantState:
    return TenantState.build(
        "t",
        [Policy(name, settings) for name, settings in policies.items()],
        [
            GroupAssignment(gid, policy, i + 1, gid)
            for i, (gid, policy) in enumerate((groups or {}).items())
        ],
        [UserAssignment(uid, policy, f"{uid}@x.org") for uid, policy in (users or {}).items()],
    )


def desired(enabled: dict[str, bool] | None = None, **rules: Any) -> DesiredState:
    return DesiredState(rules=RulesConfig(enabled=enabled or {}, **rules))


def found(current: TenantState, d: DesiredState | None = None, rule: str | None = None) -> list:
    out = run_rules(current, d or desired())
    return [f for f in out if rule is None or f.rule_id == rule]


def test_rule_ids() -> None:
    assert RULE_IDS == (
        "read-receipts-consistency",
        "clinical-read-receipts",
        "clinical-priority",
        "clinical-coverage",
        "no-priority-anywhere",
        "read-receipts-group-size",
    )


# ---------------------------------------------------------------- read-receipts-consistency

RULE = "read-receipts-consistency"


def test_consistency_trips_when_policies_in_use_differ() -> None:
    current = tenant(
        {"Global": OK, "Kitchen": {**OK, "ReadReceiptsEnabledType": "UserPreference"}},
        groups={"g-kitchen": "Kitchen"},
    )
    (f,) = found(current, rule=RULE)
    assert f.severity == "warning" and f.policies == ("Kitchen",)
    assert "Kitchen: User controlled (UserPreference)" in f.explanation
    assert "every messaging policy in use" in f.explanation


def test_consistency_ignores_unassigned_policies_and_only_global() -> None:
    unused = tenant({"Global": OK, "Kitchen": {**OK, "ReadReceiptsEnabledType": "None"}})
    assert found(unused, rule=RULE) == []
    assert found(tenant({"Global": OK}), rule=RULE) == []
    # Nobody has "Everyone": the rule is about "On for everyone" not holding.
    none_everyone = tenant(
        {
            "Global": {**OK, "ReadReceiptsEnabledType": "UserPreference"},
            "K": {**OK, "ReadReceiptsEnabledType": "None"},
        },
        users={"u1": "K"},
    )
    assert found(none_everyone, rule=RULE) == []


def test_consistency_switch() -> None:
    current = tenant(
        {"Global": OK, "K": {**OK, "ReadReceiptsEnabledType": "None"}}, users={"u1": "K"}
    )
    assert found(current, desired({RULE: False}), rule=RULE) == []


# ---------------------------------------------------------------- clinical-read-receipts


@pytest.mark.parametrize(("value", "severity"), [("None", "error"), ("UserPreference", "warning")])
def test_clinical_read_receipts_trips(value: str, severity: str) -> None:
    current = tenant(
        {"Global": OK, "Nursing": {**OK, "ReadReceiptsEnabledType": value}}, groups={"g": "Nursing"}
    )
    (f,) = found(current, rule="clinical-read-receipts")
    assert f.severity == severity and f.policies == ("Nursing",)
    assert "matches rules.clinical_pattern" in f.explanation


def test_clinical_by_name_list_and_not_clinical() -> None:
    off = {**OK, "ReadReceiptsEnabledType": "None"}
    current = tenant({"Global": OK, "Team Blue": off, "Kitchen": off}, users={"u": "Team Blue"})
    assert found(current, rule="clinical-read-receipts") == []  # neither name looks clinical
    named = desired(clinical_policies=("tag:team blue",))
    (f,) = found(current, named, rule="clinical-read-receipts")
    assert f.policies == ("Team Blue",) and "listed in rules.clinical_policies" in f.explanation
    assert found(tenant({"Global": OK, "Clinical": OK}), rule="clinical-read-receipts") == []


OFF = {"ReadReceiptsEnabledType": "None", "AllowPriorityMessages": False}


def _clinical(current: TenantState, d: DesiredState | None = None) -> set[str]:
    return {
        p
        for f in found(current, d)
        if f.rule_id in ("clinical-read-receipts", "clinical-priority")
        for p in f.policies
    }


CLINICAL_NAMES = [
    "ICU Doctors",
    "Nursing",
    "Medical Staff",
    "Emergency Dept",
    "Clinicians",
    "Internal Medicine",
    "Medication Safety Board",  # a wide net: missing a clinical policy is the worse mistake
    # Words the old whole-word pattern missed: "_" is a word character to \b, CamelCase is one
    # word, and NICU/PICU/paramedics were not in it.
    "NICU Staff",
    "PICU",
    "ICU_Nurses",
    "ICUs",
    "EmergencyDept",
    "Paramedics",
    "DoctorsOnCall",
    "ED Triage",
    "EDs",
    "A&E",
    "Ward 7",
    "Critical Care",
    "Surgery-Team2",
    "Anaesthetists",
    "Anesthesia",
    "Residents",
    "OncologyNurses",
    "Midwives",
    "Non-Clinical Nurses",  # negates "Clinical", not "Nurses"
    # Common hospital names the list used to miss.
    "Med-Surg",
    "MedSurg",
    "Med/Surg 4",
    "L&D",
    "L & D Nurses",
    "Labor & Delivery",
    "Labour and Delivery",
    "OB/GYN",
    "OBGYN",
    "Obs & Gynae",
    "Gyn Clinic",
    "O&G",
    "Lab",
    "Labs",
    "Microbiology Lab",
    "Phlebotomists",
    "Phlebotomy",
    "HCA",
    "HCAs",
    "Allied Health",
    "PACU",
    "Cath Lab",
    "CathLab",
    "Dialysis Unit",
    "Behavioral Health",
    "Behavioural Health",
    "Mental Health Liaison",
    "Psych",
    "Psychiatry",
    "Psychology",
    "Psychometrics",  # leans wide: neuropsychological testing is clinical
    "Lab Equipment Vendors",  # leans wide: "Lab" is taken as the hospital's lab
    "EMS",
    "Rapid Response",
    "Code Team",
    "Crash Team",
    "Resus",
    "Resuscitation",
    "House Staff",
    "Peds",
    "Paeds",
    "Paediatrics",
    "Pediatric Nurses",
    "SCBU",
    "AMU",
    "MAU",
    "CVICU",
    "CTICU",
    "CVICUs",
    "OR",
    "OR Staff",
    "ORTeam",
    "Periop",
    "Perioperative",
    "Telemetry",
    "Step-Down",
    "StepDown",
    "Stepdown Unit",
    "Orthopaedics",
    "Orthopedic Surgery",
    "Urology",
    "Haematology",
    "Hematology",
    "Nephrology",
    "Geriatrics",
    "Geriatric Medicine",
    "Endoscopy",
    "Midwifery",
    "CNA",
    "LPN",
    "LPNs",
    "NP",
    "NPs",
    "APP",
    "APPs",
    "RN",
    "RNs",
]
NOT_CLINICAL_NAMES = [
    "Non-Clinical Staff",
    "Non Clinical",
    "nonclinical",
    "NonClinical",
    "Not clinical",
    "non_clinical",
    "Horticulture",
    "Agriculture",
    "Curriculum",
    "Kitchen",
    "Ficus Team",
    "Shared Mailbox",  # ends in "ed", but ED only counts as its own word, in capitals
    "EdTech",
    "Education",
    "Finance",
    "Global Care Estates",
    "Facilities",
    "IT",
    "HR",
    "Volunteers",
    "Chaplaincy",
    "Estates",
    "Wardrobe",
    "Collaboration",  # "lab" only as a whole word
    "Collaborators",
    "Orange",  # OR only as its own word, in capitals
    "Or Else",
    "Labour Relations",  # "labour" only with "delivery"
    "Delivery Team",
    "Surge Pricing",
    "Code Review",
    "House Keeping",
    "Health Information",
    "R&D",
    "Non Psych",
    "Not Lab",
    "ficus",  # not "<letters>ICU" (in capitals only)
    "app",
    "np",
    "Ems",
    "Obsidian",
]


@pytest.mark.parametrize("name", CLINICAL_NAMES)
def test_default_pattern_finds_clinical_names(name: str) -> None:
    current = tenant({"Global": OK, name: OFF}, users={"u": name})
    assert _clinical(current) == {name}


@pytest.mark.parametrize("name", NOT_CLINICAL_NAMES)
def test_default_pattern_leaves_other_names_and_negations(name: str) -> None:
    current = tenant({"Global": OK, name: OFF}, users={"u": name})
    assert _clinical(current) == set()


def test_name_words_split_on_separators_digits_and_camel_case() -> None:
    from bridge.rules.base import name_words

    assert name_words("ICU_Nurses2") == ["ICU", "Nurses", "2"]
    assert name_words("DoctorsOnCall") == ["Doctors", "On", "Call"]
    assert name_words("NICUStaff-night shift") == ["NICU", "Staff", "night", "shift"]
    assert name_words("EDs A & E") == ["ED", "A&E"]
    assert name_words("L & D/OB-GYN") == ["L&D", "OB", "GYN"]
    assert name_words("Med/Surg MedSurg") == ["Med", "Surg", "Med", "Surg"]
    assert name_words("Labour & Delivery") == ["Labour", "Delivery"]
    assert name_words("Collaboration Lab") == ["Collaboration", "Lab"]


def test_phrases_of_two_and_three_words_are_named_in_the_explanation() -> None:
    from bridge.rules.base import default_clinical_match

    assert default_clinical_match("Labour and Delivery") == "Labour and Delivery"
    assert default_clinical_match("Cath Lab") == "Cath Lab"
    assert default_clinical_match("Night Rapid Response") == "Rapid Response"
    assert default_clinical_match("Labour") is None
    assert default_clinical_match("Non Mental Health") is None


def test_explanation_names_the_matching_word() -> None:
    current = tenant({"Global": OK, "ICU_Nurses": OFF}, users={"u": "ICU_Nurses"})
    (f,) = found(current, rule="clinical-read-receipts")
    assert "matches rules.clinical_pattern: 'ICU'" in f.explanation


def test_clinical_policies_list_keeps_the_default_pattern() -> None:
    current = tenant(
        {"Global": OK, "Team Blue": OFF, "Nursing": OFF}, users={"a": "Team Blue", "b": "Nursing"}
    )
    # Listing one policy adds it; it does not switch name matching off for every other.
    assert _clinical(current, desired(clinical_policies=("Team Blue",))) == {"Team Blue", "Nursing"}
    # Only clinical_pattern: "" (false in the file) leaves the list alone to decide.
    alone = desired(clinical_policies=("Team Blue",), clinical_pattern="")
    assert _clinical(current, alone) == {"Team Blue"}
    # A pattern the file sets replaces the built-in one and is used together with the list.
    own = desired(clinical_policies=("Team Blue",), clinical_pattern=r"(?i)\bkitchen")
    kitchen = tenant(
        {"Global": OK, "Team Blue": OFF, "Nursing": OFF, "Kitchen": OFF},
        users={"a": "Team Blue", "b": "Nursing", "c": "Kitchen"},
    )
    assert _clinical(kitchen, own) == {"Team Blue", "Kitchen"}


def test_unused_clinical_policy_is_info_and_never_fails() -> None:
    current = tenant({"Global": OK, "Nursing": OFF, "Nursing Pilot": OFF}, users={"u": "Nursing"})
    by_policy = {
        (f.rule_id, f.policies): f for f in found(current) if f.rule_id.startswith("clinical-")
    }
    used = by_policy[("clinical-read-receipts", ("Nursing",))]
    unused = by_policy[("clinical-read-receipts", ("Nursing Pilot",))]
    assert used.severity == "error"
    assert unused.severity == "info" and "not assigned to anyone yet" in unused.explanation
    assert by_policy[("clinical-priority", ("Nursing Pilot",))].severity == "info"


def test_clinical_read_receipts_switch() -> None:
    current = tenant({"Global": OK, "Nursing": {**OK, "ReadReceiptsEnabledType": "None"}})
    assert (
        found(current, desired({"clinical-read-receipts": False}), rule="clinical-read-receipts")
        == []
    )


def test_invalid_clinical_pattern_is_a_desired_state_error() -> None:
    with pytest.raises(DesiredStateError, match="clinical_pattern '\\(' is not a valid"):
        run_rules(tenant({"Global": OK}), desired(clinical_pattern="("))


# ---------------------------------------------------------------- clinical-priority


def test_clinical_priority_trips_and_does_not() -> None:
    current = tenant(
        {"Global": OK, "ICU Doctors": {**OK, "AllowPriorityMessages": False}},
        users={"u": "ICU Doctors"},
    )
    (f,) = found(current, rule="clinical-priority")
    assert f.severity == "error" and f.policies == ("ICU Doctors",)
    assert "every 2 minutes for up to 20 minutes" in f.explanation
    unknown = tenant(
        {"Global": OK, "Surgeons": {"ReadReceiptsEnabledType": "Everyone"}},
        groups={"g": "Surgeons"},
    )
    (g,) = found(unknown, rule="clinical-priority")
    assert g.severity == "warning" and "not reported by the service" in g.explanation
    assert found(tenant({"Global": OK, "Surgeons": OK}), rule="clinical-priority") == []
    assert found(current, desired({"clinical-priority": False}), rule="clinical-priority") == []


# ---------------------------------------------------------------- no-priority-anywhere


def test_no_priority_anywhere() -> None:
    off = {**OK, "AllowPriorityMessages": False}
    current = tenant({"Global": off, "Kitchen": off, "Spare": OK}, users={"u": "Kitchen"})
    (f,) = found(current, rule="no-priority-anywhere")  # Spare allows it but nobody has it
    assert f.severity == "warning" and f.policies == ("Global", "Kitchen")
    assert (
        found(tenant({"Global": off, "K": OK}, users={"u": "K"}), rule="no-priority-anywhere") == []
    )
    assert (
        found(current, desired({"no-priority-anywhere": False}), rule="no-priority-anywhere") == []
    )


# ---------------------------------------------------------------- read-receipts-group-size


def test_group_size_info_when_read_receipts_enabled_or_managed() -> None:
    (f,) = found(tenant({"Global": OK}), rule="read-receipts-group-size")
    assert f.severity == "info" and "20 people or fewer" in f.title
    off = tenant({"Global": {**OK, "ReadReceiptsEnabledType": "None"}})
    assert found(off, rule="read-receipts-group-size") == []
    managed = desired()
    managed.policies["global"] = DesiredPolicy("Global", {"ReadReceiptsEnabledType": "None"})
    assert len(found(off, managed, rule="read-receipts-group-size")) == 1
    assert (
        found(
            tenant({"Global": OK}),
            desired({"read-receipts-group-size": False}),
            rule="read-receipts-group-size",
        )
        == []
    )


def test_all_rules_off_and_stable_order() -> None:
    bad = tenant(
        {
            "Global": {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": False},
            "Nursing": {"ReadReceiptsEnabledType": "None", "AllowPriorityMessages": False},
        },
        groups={"g": "Nursing"},
    )
    ids = [f.rule_id for f in found(bad)]
    # clinical-coverage needs rules.clinicians (tests/test_coverage.py)
    assert ids == [r for r in RULE_IDS if r != "clinical-coverage"]
    assert found(bad, desired(dict.fromkeys(RULE_IDS, False))) == []
