"""The fleet file (bridge.fleet.load_fleet): one bad-file fixture per error, its message asserted;
shards (rendezvous hashing) and where the shard comes from on Kubernetes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.fleet import (
    Shard,
    default_shard,
    load_fleet,
    parse_fleet,
    parse_shard,
    shard_of,
    tenant_settings,
)

FIXTURES = Path(__file__).parent / "fixtures" / "fleet"


def test_good_file_resolves_paths_defaults_and_overrides() -> None:
    fleet = load_fleet(FIXTURES / "good.yaml")
    north, contoso, research = fleet.tenants
    assert fleet.names() == ["northwind", "contoso-clinic", "research"]
    # Desired and certificate paths are relative to the fleet file, not the working directory.
    assert Path(north.desired) == FIXTURES / "desired" / "northwind.yaml"
    assert Path(contoso.credential.ref) == FIXTURES / "certs" / "contoso.pem"
    assert research.credential.ref == "/var/run/secrets/azure/tokens/azure-identity-token"
    assert (north.credential.kind, north.credential.ref) == ("secret_env", "NORTHWIND_SECRET")
    assert contoso.credential.password_env == "CONTOSO_CERT_PASSWORD"
    # mode and interval: defaults, overridden per tenant.
    assert [t.mode for t in fleet.tenants] == ["apply", "drift", "drift"]
    assert [t.interval for t in fleet.tenants] == [600.0, 3600.0, 600.0]
    assert [t.cloud for t in fleet.tenants] == [None, "gcc", None]
    assert str(contoso.location).endswith("good.yaml:10:5")


BAD = [
    (
        "unknown_key.yaml",
        [
            "unknown_key.yaml:6:5: error: unknown key 'desried' in a tenant entry (did you mean "
            "'desired'?)",
            "unknown_key.yaml:2:5: error: tenant 'northwind' has no desired",
        ],
    ),
    (
        "secret_in_file.yaml",
        [
            "secret_in_file.yaml:7:7: error: 'client_secret' in the credential of tenant "
            "'northwind': secrets are never written in the fleet file"
        ],
    ),
    (
        "secret_as_env_name.yaml",
        ["secret_as_env_name.yaml:6:19: error: this is not an environment variable name"],
    ),
    (
        "two_credentials.yaml",
        [
            "two_credentials.yaml:6:7: error: the credential of tenant 'northwind' names 2 of "
            "secret_env, certificate, federated_token_file: give exactly one"
        ],
    ),
    (
        "no_credential.yaml",
        ["no_credential.yaml:5:17: error: the credential of tenant 'northwind' names 0 of"],
    ),
    (
        "duplicate_name.yaml",
        ["duplicate_name.yaml:7:11: error: name 'Northwind' is already used at line 2, column 11"],
    ),
    (
        "bad_mode.yaml",
        [
            "bad_mode.yaml:1:18: error: mode 'aply' is not one of drift, apply (did you mean "
            "'apply'?)",
            "bad_mode.yaml:8:15: error: interval 'soon': not a duration",
            "bad_mode.yaml:9:12: error: cloud 'gcchi' is not one of commercial, gcc, gcchigh, dod "
            "(did you mean 'gcchigh'?)",
        ],
    ),
    (
        "missing_fields.yaml",
        [
            "missing_fields.yaml:2:5: error: tenant 'north wind' has no tenant: add 'tenant:'",
            "missing_fields.yaml:2:5: error: tenant 'north wind' has no client_id",
            "missing_fields.yaml:2:5: error: tenant 'north wind' has no desired",
            "missing_fields.yaml:2:11: error: name 'north wind': use letters, digits",
        ],
    ),
    (
        "no_tenants.yaml",
        [
            "no_tenants.yaml:1:1: error: the fleet file has no 'tenants:' list",
            "no_tenants.yaml:2:1: error: unknown key 'tenant' in the fleet file (did you mean "
            "'tenants'?)",
        ],
    ),
    ("bad_yaml.yaml", ["bad_yaml.yaml:4:1: error: not valid YAML"]),
    (
        "duplicate_tenant.yaml",
        [
            "duplicate_tenant.yaml:7:5: error: tenant 'Northwind.onmicrosoft.com' is already "
            "listed as 'northwind' at line 2: one entry per tenant"
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_fleet_files_say_where_and_what(name: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_fleet(FIXTURES / name)
    text = str(info.value)
    for line in expected:
        assert line in text
    assert f"{len(expected)} error(s) in the fleet file" in text


def test_a_secret_written_in_the_file_is_never_echoed() -> None:
    for name in ("secret_in_file.yaml", "secret_as_env_name.yaml"):
        with pytest.raises(ConfigError) as info:
            load_fleet(FIXTURES / name)
        assert "supersecret" not in str(info.value)


def test_unreadable_and_empty_files() -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: error: cannot read the fleet file"):
        load_fleet(FIXTURES / "nope.yaml")
    with pytest.raises(ConfigError, match=r"<fleet>:1:1: error: the fleet file is empty"):
        parse_fleet("")
    with pytest.raises(ConfigError, match="tenants must be a non-empty list"):
        parse_fleet("tenants: []\n")


# --------------------------------------------------------------------------- settings per tenant

ENTRY = """
tenants:
  - name: a
    tenant: a.onmicrosoft.com
    client_id: 00000000-0000-0000-0000-00000000000a
    credential: {secret_env: A_SECRET}
    desired: a.yaml
    cloud: gcchigh
"""


def test_tenant_settings_come_from_the_entry_not_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another tenant's identity in the environment must not leak into this one.
    monkeypatch.setenv("AZURE_TENANT_ID", "other.onmicrosoft.com")
    monkeypatch.setenv("AZURE_CLIENT_ID", "ffffffff-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", __file__)
    entry = parse_fleet(ENTRY).tenants[0]
    settings = tenant_settings(entry, environ={"A_SECRET": "s3cr3t-value"}, token_cache="c.json")
    assert settings.tenant_id == "a.onmicrosoft.com"
    assert settings.client_id.endswith("0a")
    assert settings.credential_kind() == "secret"
    assert settings.client_secret.get_secret_value() == "s3cr3t-value"
    assert settings.federated_token_file is None
    assert settings.cloud == "gcchigh"
    assert settings.authority_host == "https://login.microsoftonline.us"
    assert settings.token_cache == "c.json"


def test_a_missing_secret_variable_names_the_tenant_and_the_variable() -> None:
    entry = parse_fleet(ENTRY).tenants[0]
    with pytest.raises(ConfigError, match=r"tenant a: the variable A_SECRET .* is not set"):
        tenant_settings(entry, environ={})


# --------------------------------------------------------------------------- shards

NAMES = [f"tenant-{i:03d}" for i in range(300)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_tenant_exactly_once(count: int) -> None:
    owners = Counter()
    for index in range(count):
        fleet = parse_fleet(
            "tenants:\n"
            + "".join(
                f"  - {{name: {n}, tenant: {n}.example, client_id: c, "
                f"credential: {{secret_env: S}}, desired: d.yaml}}\n"
                for n in NAMES[:60]
            )
        ).shard(index, count)
        owners.update(fleet.names())
    assert sorted(owners) == sorted(NAMES[:60])
    assert set(owners.values()) == {1}


@pytest.mark.parametrize("count", [2, 3, 5, 10])
def test_growing_the_shard_count_moves_about_one_in_n_plus_one(count: int) -> None:
    moved = [n for n in NAMES if shard_of(n, count) != shard_of(n, count + 1)]
    # Only tenants the new shard wins move, and about 1/(N+1) of them (binomial, 300 draws).
    assert all(shard_of(n, count + 1) == count for n in moved)
    expected = len(NAMES) / (count + 1)
    assert abs(len(moved) - expected) < 4 * (expected**0.5) + 3
    # Spread: no shard gets more than twice its share.
    sizes = Counter(shard_of(n, count) for n in NAMES)
    assert max(sizes.values()) < 2 * len(NAMES) / count


@settings(max_examples=50, deadline=None)  # budget: 50 examples
@given(st.text(min_size=1, max_size=30), st.integers(min_value=1, max_value=20))
def test_shard_of_is_stable_and_in_range(name: str, count: int) -> None:
    assert 0 <= shard_of(name, count) < count
    assert shard_of(name, count) == shard_of(name, count)


def test_parse_shard() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="give I/N"):
            parse_shard(bad)


def test_default_shard_from_the_pod() -> None:
    assert default_shard({}, "laptop") == Shard(0, 1)
    assert default_shard({"BRIDGE_SHARD": "1/4"}, "x") == Shard(1, 4)
    # Indexed Job: the completion index.
    env = {"BRIDGE_SHARDS": "3", "JOB_COMPLETION_INDEX": "2"}
    assert default_shard(env, "fleet-drift-2-abcde") == Shard(2, 3)
    # StatefulSet: the ordinal at the end of the host name.
    assert default_shard({"BRIDGE_SHARDS": "3"}, "teams-bridge-fleet-1") == Shard(1, 3)
    assert default_shard({"BRIDGE_SHARDS": "3"}, "teams-bridge-fleet-0.svc.local") == Shard(0, 3)
    with pytest.raises(ConfigError, match="does not end in a StatefulSet ordinal"):
        default_shard({"BRIDGE_SHARDS": "3"}, "laptop")
    with pytest.raises(ConfigError, match=r"shard index 5 .* is not below BRIDGE_SHARDS=3"):
        default_shard({"BRIDGE_SHARDS": "3"}, "teams-bridge-fleet-5")
    with pytest.raises(ConfigError, match="BRIDGE_SHARDS='x'"):
        default_shard({"BRIDGE_SHARDS": "x"}, "a-1")


# --------------------------------------------------------------------------- fuzz

GOOD = (FIXTURES / "good.yaml").read_text("utf-8")


@settings(max_examples=150, deadline=None)  # budget: 150 random texts
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_the_fleet_file_error(text: str) -> None:
    _loads_or_config_error(text)


@settings(max_examples=150, deadline=None)  # budget: 150 edits of the good file
@given(st.integers(min_value=0, max_value=len(GOOD)), st.text(max_size=12), st.integers(0, 12))
def test_edits_of_a_good_file_load_or_raise_the_fleet_file_error(
    at: int, insert: str, cut: int
) -> None:
    _loads_or_config_error(GOOD[:at] + insert + GOOD[at + cut :])


def _loads_or_config_error(text: str) -> None:
    try:
        fleet = parse_fleet(text, "f.yaml")
    except ConfigError as exc:
        assert "f.yaml" in str(exc)
        return
    assert all(t.name and t.credential.ref for t in fleet.tenants)


def test_fleet_runner_checks_its_concurrency() -> None:
    from bridge.fleet import FleetOptions, FleetRunner

    fleet = parse_fleet(ENTRY)
    with pytest.raises(ConfigError, match="--concurrency"):
        FleetRunner(fleet, FleetOptions("drift", concurrency=0))
    with pytest.raises(ConfigError, match="choose drift, plan or apply"):
        FleetRunner(fleet, FleetOptions("destroy"))


def test_many_tenants_secrets_are_redacted_whole_even_when_one_starts_with_another() -> None:
    from bridge.redact import redact, register_secret

    register_secret("tenant-a-secret")
    register_secret("tenant-a-secret-and-more")
    said = redact("a: tenant-a-secret-and-more, b: tenant-a-secret")
    assert said == "a: [redacted], b: [redacted]"
    # Given in the worst order (the shorter first), too.
    said = redact("c: tenant-c-key-longer", ["tenant-c-key", "tenant-c-key-longer"])
    assert said == "c: [redacted]"
