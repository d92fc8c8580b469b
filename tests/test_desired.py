"""The desired-state loader: one fixture per validation error, its message and position asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.desired import load_desired, parse_desired
from bridge.errors import DesiredStateError

INVALID = Path(__file__).parent / "fixtures" / "invalid"

CASES = {
    "unknown_setting": ("3:5", "unknown setting 'AllowGiphys' (did you mean 'AllowGiphy'?)"),
    "wrong_type": ("3:28", "AllowPriorityMessages takes true or false, not 'sometimes'"),
    "value_not_allowed": (
        "3:30",
        "'Always' is not allowed for ReadReceiptsEnabledType; allowed: UserPreference, "
        "Everyone, None",
    ),
    "duplicate_key": ("4:5", "duplicate key 'AllowGiphy' (first written at line 3)"),
    "case_duplicate_policy": ("4:3", "policy 'clinical' differs from 'Clinical' only in case"),
    "undeclared_policy": ("6:15", "names policy 'Surgery', which is neither declared"),
    "global_absent": ("3:13", "Global cannot be deleted"),
    "duplicate_user": ("7:13", "user 'Amara.Okafor@northwind-health.org' is listed twice"),
    "duplicate_group": ("8:14", "group 'physicians' is assigned twice (also at line 5)"),
    "zero_rank": ("7:13", "rank of group 'Physicians' must be a whole number from 1"),
    "negative_rank": ("7:13", "not -2"),
    "unsafe_tag": ("3:18", "YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is refused"),
    "known_setting_in_extra": ("4:7", "'AllowGiphy' is a known setting (AllowGiphy)"),
    "absent_with_settings": ("3:5", "marked 'ensure: absent' and also lists settings"),
    "user_global": ("5:15", "Global cannot be assigned directly"),
    "bad_yaml": ("4:1", "not valid YAML"),
    "unknown_top_key": ("1:1", "unknown key 'policy' in the top level (did you mean 'policies'?)"),
    "bad_int_tag": ("3:18", "value 'abc' is not a valid !!int: correct it, or quote it"),
    "bad_bool_tag": ("3:17", "value 'maybe' is not a valid !!bool"),
    "bad_timestamp_tag": ("3:18", "value 'notadate' is not a valid !!timestamp"),
    "impossible_date": ("3:18", "value '2024-13-45' is not a valid !!timestamp"),
    "map_tag_on_text": ("3:18", "value 'x' is tagged !!map, which needs a mapping"),
    "bad_tag_on_key": ("2:3", "value 'X' is not a valid !!float"),
    "str_tag_on_mapping": ("2:13", "a mapping cannot be tagged !!str: remove the tag"),
    "true_and_one_keys": ("3:3", "key True and key 1 (line 2) are the same key once loaded"),
    "extra_service_field": ("5:7", "'identity' cannot be set under 'extra:': ConfigId, "),
    "extra_ensure": ("4:7", "'ensure' is not a setting: write it on the policy itself"),
    "extra_common_parameter": (
        "6:7",
        "extra setting 'WhatIf' is PowerShell's common parameter -WhatIf, not a setting: the "
        "PowerShell transport splats settings into the cmdlet, where it would change the call "
        "itself",
    ),
    "extra_parameter_prefix": (
        "4:7",
        "extra setting 'outvar' is read by PowerShell as the common parameter -OutVariable",
    ),
    "extra_cmdlet_parameter": ("4:7", "extra setting 'FORCE' is the policy cmdlets' parameter"),
    "service_field_setting": (
        "4:5",
        "'Identity' cannot be set in a policy: ConfigId, ConfigMetadata, DataSource, Identity, "
        "Key and @odata.* are service fields, not settings",
    ),
    "extra_case_duplicate": ("5:7", "extra setting 'allownewthing' differs from 'AllowNewThing'"),
    "too_many_groups": (
        "69:7",
        "group 'Group 65' is assignment #65: the service holds at most 64 group assignments",
    ),
    "control_character": (
        "3:20",
        "character U+0007 is not allowed in YAML (control characters are not allowed): remove "
        "it, or write it inside double quotes as \\u0007",
    ),
    "not_utf8": ("3:21", "not UTF-8 text (byte 0xe9: invalid continuation byte): save the file"),
    "truncated_json": ("1:48", "not valid JSON: expected ',' or '}'"),
    "role_unknown_attribute": (
        "8:9",
        "unknown user attribute 'jobtitel' in role 'Clinicians' where (did you mean 'jobTitle'?)",
    ),
    "role_empty_where": ("7:14", "role 'Clinicians' where is empty: name the attributes"),
    "role_undeclared_policy": (
        "6:15",
        "role 'Clinicians' names policy 'Clinicl', which is neither declared under policies: "
        "nor Global",
    ),
    "role_duplicate_name": ("8:13", "role 'clinicians' is named twice (also at line 5)"),
    "clinicians_unknown_role": (
        "9:23",
        "rules.clinicians names role 'Clinician' (did you mean 'Clinicians'?), which is not "
        "under assignments.roles",
    ),
    "second_document": (
        "5:1",
        "a second YAML document starts here ('---'): a desired-state file is one",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_invalid_fixture_names_file_line_and_fix(name: str) -> None:
    (path,) = INVALID.glob(f"{name}.*")  # .yaml, or .json for JSON's own errors
    where, message = CASES[name]
    with pytest.raises(DesiredStateError) as info:
        load_desired(path)
    text = str(info.value)
    assert f"{path}:{where}: error: " in text, text
    assert message in text, text


def test_every_fixture_has_a_case() -> None:
    assert {p.stem for p in INVALID.iterdir()} == set(CASES)


def test_all_problems_are_reported_in_one_run() -> None:
    text = """\
policies:
  Clinical:
    AllowGiphys: false
    ReadReceiptsEnabledType: Always
assignments:
  groups:
    - group: A
      policy: Nope
      rank: 0
"""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.yaml")
    assert len([p for p in info.value.problems if p.severity == "error"]) == 4
    assert "4 error(s)" in str(info.value)  # the bad rank does not hide the bad policy


def test_enums_are_normalised_to_the_service_casing_and_b2b_accepts_enabled() -> None:
    state = parse_desired(
        """\
policies:
  Tag:Clinical:
    GiphyRatingType: NORESTRICTION
    ReadReceiptsEnabledType: everyone
    UseB2BInvitesToAddExternalUsers: Disabled
  Other:
    UseB2BInvitesToAddExternalUsers: true
""",
        "f.yaml",
    )
    clinical = state.policy("clinical")
    assert clinical is not None
    assert clinical.name == "Clinical"
    assert dict(clinical.settings) == {
        "GiphyRatingType": "NoRestriction",
        "ReadReceiptsEnabledType": "Everyone",
        "UseB2BInvitesToAddExternalUsers": False,
    }
    assert any("Tag: prefix is a wire detail" in n for n in state.notes)


def test_extra_settings_are_kept_with_a_note() -> None:
    state = parse_desired(
        "policies:\n  Clinical:\n    extra:\n      AllowBrandNewThing: true\n", "f.yaml"
    )
    policy = state.policy("Clinical")
    assert policy is not None and policy.settings == {"AllowBrandNewThing": True}
    assert any("not in teams-bridge's catalogue" in n for n in state.notes)


def test_ranks_default_to_list_order_and_users_can_be_removed() -> None:
    state = parse_desired(
        """\
policies:
  A: {}
  B: {}
assignments:
  groups:
    - {group: G1, policy: A}
    - {group: G2, policy: b}
  users:
    - {user: u@x.org, ensure: absent}
""",
        "f.yaml",
    )
    assert [(g.group, g.policy, g.rank) for g in state.group_assignments] == [
        ("G1", "A", 1),
        ("G2", "B", 2),
    ]
    assert state.user_assignments[0].absent and state.user_assignments[0].policy is None


def test_a_missing_rank_means_lowest_not_the_list_position() -> None:
    # Kitchen has no rank: it must not outrank Physicians (rank 5) for people in both groups.
    state = parse_desired(
        """\
policies:
  Clinical: {}
  Kitchen: {}
assignments:
  groups:
    - {group: Kitchen staff, policy: Kitchen}
    - {group: Physicians, policy: Clinical, rank: 5}
    - {group: Porters, policy: Kitchen}
    - {group: Nurses, policy: Clinical, rank: 2.0}
""",
        "f.yaml",
    )
    assert [(g.group, g.rank) for g in state.group_assignments] == [
        ("Kitchen staff", 6),
        ("Physicians", 5),
        ("Porters", 7),
        ("Nurses", 2),
    ]


def test_a_policy_with_a_malformed_body_is_one_error_not_one_per_assignment() -> None:
    text = """\
policies:
  Pharmacy: "text"
assignments:
  groups:
    - {group: Pharmacy, policy: Pharmacy, rank: 1}
  users:
    - {user: a@x.org, policy: Pharmacy}
"""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.yaml")
    (problem,) = info.value.problems
    assert str(problem) == "f.yaml:2:13: error: policy 'Pharmacy' must be a mapping, not str 'text'"


def test_values_in_messages_are_short_and_never_crash() -> None:
    deep = "[" * 995 + "]" * 995  # nested past Python's repr recursion limit
    long = "x" * 5000
    text = f"policies:\n  A:\n    AllowGiphy: {deep}\n    Description: {{a: 1}}\n"
    text += f"    AllowMemes: {long}\n"
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.yaml")
    messages = [p.message for p in info.value.problems]
    assert messages[0] == "AllowGiphy takes true or false, not a list"
    assert messages[1] == "Description takes text, not a mapping"
    assert messages[2].startswith("AllowMemes takes true or false, not 'xxx")
    assert len(messages[2]) < 120


def test_user_checks_ignore_spaces_and_count_every_user_of_a_bad_policy() -> None:
    text = """\
policies:
  Clinical: {}
assignments:
  users:
    - {user: " a@x.org", policy: Clinical}
    - {user: "a@x.org ", policy: Clinical}
    - {user: b@x.org, policy: Surgery}
    - {user: c@x.org, policy: Surgery}
    - {user: d@x.org, policy: Surgery}
"""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.yaml")
    messages = [str(p) for p in info.value.problems]
    assert messages[0].startswith("f.yaml:6:14: error: user 'a@x.org ' is listed twice")
    assert messages[1].startswith("f.yaml:7:31: error: user 'b@x.org' names policy 'Surgery'")
    assert messages[1].endswith("declared: Clinical (and 2 more users)")
    assert len(messages) == 2


def test_json_is_accepted() -> None:
    state = parse_desired('{"policies": {"Global": {"AllowPriorityMessages": true}}}', "f.json")
    assert state.policy("global") is not None


def test_json_is_read_by_jsons_rules_with_positions() -> None:
    # json.dumps writes an emoji as a surrogate pair; 1e5 is a number in JSON, text in YAML 1.1.
    text = json.dumps(
        {"policies": {"Clinical": {"Description": "caf\u00e9 \U0001f600", "extra": {"N": 1e5}}}},
        indent=1,
    )
    assert "\\ud83d\\ude00" in text
    for source in ("f.json", "f.yaml"):  # a .yaml file holding JSON is read the same way
        state = parse_desired("\ufeff \n" + text, source)
        clinical = state.policy("Clinical")
        assert clinical is not None
        assert clinical.settings == {"Description": "caf\u00e9 \U0001f600", "N": 100000.0}
    with pytest.raises(DesiredStateError) as info:
        parse_desired('{\n "policies": {"A": {"AllowGiphy": 1,\n  "AllowGiphy": true}}}', "f.json")
    assert "f.json:3:3: error: duplicate key 'AllowGiphy' (first written at line 2)" in str(
        info.value
    )
    # YAML flow style that only looks like JSON is still YAML.
    assert parse_desired("{policies: {A: {AllowGiphy: yes}}}", "f.yaml").policy("A") is not None


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 5000, "1e999"])
def test_a_json_number_too_large_to_read_is_a_positioned_problem(number: str) -> None:
    # int() refuses more than about 4,300 digits (a ValueError, not a JSON error); 1e999 is inf.
    text = '{"policies": {"A": {\n  "extra": {"N": ' + number + "}}}}"
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.json")
    assert "f.json:2:18: error: number '" in str(info.value)
    assert "is too large to read" in str(info.value)


def test_safety_and_rules_blocks() -> None:
    state = parse_desired(
        """\
safety:
  max_policy_deletes: 0
  max_user_change_share: 25%
rules:
  no-priority-anywhere: false
  clinical_policies: [Tag:Clinical]
""",
        "f.yaml",
    )
    assert state.safety.max_policy_deletes == 0
    assert state.safety.max_user_change_share == 0.25
    assert not state.rules.is_enabled("no-priority-anywhere")
    assert state.rules.is_enabled("clinical-priority")
    assert state.rules.clinical_policies == ("Clinical",)


@pytest.mark.parametrize("written", ["false", '""'])
def test_clinical_pattern_false_or_empty_switches_name_matching_off(written: str) -> None:
    from bridge.state import DEFAULT_CLINICAL_PATTERN

    state = parse_desired(f"rules:\n  clinical_pattern: {written}\n", "f.yaml")
    assert state.rules.clinical_pattern == ""
    assert parse_desired("rules: {}\n", "f.yaml").rules.clinical_pattern == DEFAULT_CLINICAL_PATTERN
    with pytest.raises(DesiredStateError, match=r"2:21: error: rules\.clinical_pattern is a"):
        parse_desired("rules:\n  clinical_pattern: true\n", "f.yaml")


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(DesiredStateError, match="unknown rule 'no-priority'"):
        parse_desired("rules:\n  no-priority: false\n", "f.yaml")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DesiredStateError, match="cannot read the file"):
        load_desired(tmp_path / "nope.yaml")


def test_example_file_is_valid() -> None:
    state = load_desired(Path(__file__).parents[1] / "examples" / "northwind.yaml")
    assert state.tenant == "northwind-health.onmicrosoft.com"
    assert len(state.policies) == 9


def test_extra_values_must_be_plain_and_merge_keys_are_refused() -> None:
    text = """\
base: &base
  AllowGiphy: false
policies:
  Clinical:
    <<: *base
  X:
    extra:
      AllowNew: 2024-01-01
      AllowOther: .nan
"""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text, "f.yaml")
    message = str(info.value)
    assert "f.yaml:5:5: error: YAML merge keys (<<: *anchor) are not supported" in message
    assert "f.yaml:8:17: error: extra setting 'AllowNew' takes a plain value" in message
    assert "f.yaml:9:19: error: extra setting 'AllowOther' takes a plain value" in message
