"""Every number from a file, an option or the environment is finite and in range before use
(issue 17, defect 1): the one place is ``bridge.limits``; these tests go through each way in."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from http_fixtures import clean_env_fixture  # noqa: F401

from bridge import limits, planfile
from bridge.cli import main
from bridge.errors import ConfigError, PlanError
from bridge.plan import DeletePolicy, Plan
from bridge.settings import Settings
from bridge.state import SafetyLimits

ROOT = Path(__file__).parents[1]
DESIRED = str(ROOT / "examples" / "northwind.yaml")
NOT_FINITE = [math.nan, math.inf, -math.inf]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


# --------------------------------------------------------------------------- the one check


@pytest.mark.parametrize("value", [*NOT_FINITE, "0.1", None, True, [0.1]])
def test_check_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(limits.NumberError) as err:
        limits.check(value, limits.SHARE, "safety.max_user_change_share")
    assert str(err.value).startswith("safety.max_user_change_share: ")
    assert "give a number from 0 to 1" in str(err.value)


def test_check_bounds_are_exact():
    assert limits.check(0, limits.SHARE, "x") == 0
    assert limits.check(1.0, limits.SHARE, "x") == 1.0
    with pytest.raises(limits.NumberError, match="out of range"):
        limits.check(1.0000001, limits.SHARE, "x")
    with pytest.raises(limits.NumberError, match="out of range"):
        limits.check(-1e-9, limits.SHARE, "x")
    # "above 0": 0 itself is refused, the smallest positive number is not.
    with pytest.raises(limits.NumberError, match="above 0"):
        limits.check(0.0, limits.TIMEOUT_SECONDS, "x")
    assert limits.check(5e-324, limits.TIMEOUT_SECONDS, "x") == 5e-324
    assert limits.check(3600, limits.TIMEOUT_SECONDS, "x") == 3600
    with pytest.raises(limits.NumberError):
        limits.check(3600.001, limits.TIMEOUT_SECONDS, "x")


def test_whole_numbers_come_back_as_int_and_fractions_are_refused():
    assert isinstance(limits.check(3.0, limits.COUNT, "x"), int)
    with pytest.raises(limits.NumberError, match="not a whole number"):
        limits.check(2.5, limits.COUNT, "x")
    with pytest.raises(limits.NumberError, match="out of range"):
        limits.check(10**400, limits.COUNT, "x")


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e999", "abc", "", "0x10"])
def test_parse_refuses_text_that_is_not_a_finite_number_naming_where(text):
    with pytest.raises(limits.NumberError) as err:
        limits.parse(text, limits.LOCK_SECONDS, "--lock-timeout")
    assert str(err.value).startswith("--lock-timeout: ")
    assert "seconds from 0 to 86,400" in str(err.value)


# --------------------------------------------------------------------------- command-line options


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--max-user-change-share", "nan", "from 0 to 1"),
        ("--max-user-change-share", "1.5", "from 0 to 1"),
        ("--verify-timeout", "nan", "seconds from 0 to 86,400"),
        ("--verify-timeout", "inf", "seconds from 0 to 86,400"),
        ("--lock-timeout", "nan", "seconds from 0 to 86,400"),
        ("--lock-timeout", "-1", "seconds from 0 to 86,400"),
        ("--max-policy-deletes", "1e999", "whole number from 0"),
    ],
)
def test_apply_options_refuse_numbers_out_of_range(capsys, option, value, allowed):
    code, _, err = run(capsys, "--sandbox", "apply", DESIRED, option, value)
    assert code == 1
    assert f"Invalid value for '{option}'" in err and allowed in err, err
    assert "Traceback" not in err


def test_history_limit_and_sandbox_knobs_refuse_non_finite_numbers(capsys, tmp_path):
    code, _, err = run(capsys, "history", "--history", str(tmp_path / "h.db"), "--limit", "-5")
    assert code == 1 and "Invalid value for '--limit'" in err
    code, _, err = run(capsys, "sandbox", "--latency", "nan")
    assert code == 1 and "Invalid value for '--latency': 'nan' is not a finite number" in err


# --------------------------------------------------------------------------- environment


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("BRIDGE_TIMEOUT_READ", "inf"),
        ("BRIDGE_TIMEOUT_READ", "nan"),
        ("BRIDGE_TIMEOUT_CONNECT", "0"),
        ("BRIDGE_TIMEOUT_CONNECT", "-inf"),
        ("BRIDGE_RETRY_MAX_SECONDS", "1e999"),
        ("BRIDGE_MAX_RPS", "nan"),
        ("BRIDGE_MAX_RPS", "1e-320"),  # the pacer's clock arithmetic overflowed
        ("BRIDGE_MAX_RPS", "0.001"),  # a request every 1000 s, holding the lock for hours
        ("BRIDGE_CONCURRENCY", "33"),
        ("BRIDGE_RETRY_ATTEMPTS", "0"),
    ],
)
def test_numeric_variables_are_finite_and_in_range(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert f"{env}: " in str(err.value) and "give a " in str(err.value), err.value


@pytest.mark.usefixtures("clean_env")
def test_numeric_variable_from_dotenv_is_checked_the_same_way(clean_env):
    (clean_env / ".env").write_text("BRIDGE_TIMEOUT_READ=nan\n")
    with pytest.raises(ConfigError, match="BRIDGE_TIMEOUT_READ: nan is not a finite number"):
        Settings.load()


@pytest.mark.usefixtures("clean_env")
def test_cli_says_which_variable_is_not_finite(capsys, monkeypatch):
    monkeypatch.setenv("BRIDGE_TIMEOUT_READ", "inf")
    code, _, err = run(capsys, "--sandbox", "plan", DESIRED)
    assert code == 1
    assert "BRIDGE_TIMEOUT_READ: inf is not a finite number" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- saved plans


def _saved(safety: dict) -> str:
    """A saved plan whose safety block is ``safety`` and whose digest was recomputed, as anyone
    who can write the file can do."""
    import datetime as dt

    plan = Plan([DeletePolicy("P1")], "tenant-1", "checksum-1", "desired-1")
    made = dt.datetime(2025, 3, 1, 6, 0, tzinfo=dt.timezone.utc)
    data = json.loads(planfile.dumps(plan, now=lambda: made))
    data["safety"] = {**data["safety"], **safety}
    data["digest"] = planfile.digest(data)
    return json.dumps(data, indent=2)  # writes NaN and Infinity as Python's json does


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, "0.1", None, True, -0.1, 1.5, 1e308]
)
def test_a_saved_plan_share_limit_that_is_not_a_share_is_refused(value):
    with pytest.raises(PlanError) as err:
        planfile.loads(_saved({"max_user_change_share": value}), "reviewed.plan")
    # At its line and column; NaN and Infinity are not even JSON, the rest is named.
    text = str(err.value)
    assert re.match(r"reviewed\.plan:\d+:\d+: ", text), text
    assert "max_user_change_share" in text or "not a JSON value" in text, text


def test_a_nan_share_says_where_it_is():
    with pytest.raises(PlanError) as err:
        planfile.loads(_saved({"max_user_change_share": math.nan}), "reviewed.plan")
    assert str(err.value).startswith("reviewed.plan:"), err.value
    line = (
        _saved({"max_user_change_share": math.nan})
        .splitlines()
        .index('    "max_user_change_share": NaN,')
    )
    assert f"reviewed.plan:{line + 1}:30: " in str(err.value), err.value


@pytest.mark.parametrize("value", [-1, 2.5, "3", 10**30, [3]])
def test_a_saved_plan_delete_limit_that_is_not_a_count_is_refused(value):
    with pytest.raises(PlanError, match="max_policy_deletes"):
        planfile.loads(_saved({"max_policy_deletes": value}), "reviewed.plan")


@pytest.mark.parametrize("share", NOT_FINITE)
def test_effective_limits_never_lets_a_non_finite_share_through(share):
    # The clamp is min(saved, default): NaN would survive it and switch the check off.
    with pytest.raises(PlanError, match="unreadable safety limits"):
        planfile.effective_limits(SafetyLimits(max_user_change_share=share))
    with pytest.raises(limits.NumberError, match="--max-user-change-share"):
        planfile.effective_limits(SafetyLimits(), max_user_change_share=share)


def test_effective_limits_of_valid_numbers_are_unchanged():
    assert planfile.effective_limits(SafetyLimits(2, 0.05, True)) == SafetyLimits(2, 0.05, True)
    assert planfile.effective_limits(
        SafetyLimits(), max_user_change_share=1, max_policy_deletes=0
    ) == SafetyLimits(0, 1, True)
