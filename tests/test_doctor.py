from __future__ import annotations

import pytest
from http_fixtures import (  # noqa: F401  (fixtures)
    APP,
    GLOBAL_READER_WID,
    GRAPH,
    POLICIES,
    TEAMS,
    TEAMS_ADMIN_WID,
    TEAMS_RESOURCE,
    TENANT,
    FakeTokens,
    clean_env_fixture,
    make_client,
    policy_obj,
    rsps_fixture,
)

from bridge.doctor import run_doctor
from bridge.errors import AuthError, LoginUnreachableError
from bridge.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_env")

ALL_GRAPH = [
    "Group.Read.All",
    "User.Read.All",
    "Organization.Read.All",
    "TeamsPolicyUserAssign.ReadWrite.All",
]


def configured() -> Settings:
    return Settings.load(
        env_file=None,
        overrides={
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": APP,
            "AZURE_CLIENT_SECRET": "doctor-secret-1",
            "BRIDGE_TEAMS_URL": TEAMS,
            "BRIDGE_GRAPH_URL": GRAPH,
        },
    )


def mock_reads(rsps) -> None:
    rsps.get(POLICIES, json=[policy_obj("Global"), policy_obj("Tag:Clinical")])
    rsps.get(
        f"{GRAPH}/v1.0/organization",
        json={
            "value": [
                {
                    "id": TENANT,
                    "displayName": "Contoso Health",
                    "verifiedDomains": [{"name": "contoso.org", "isDefault": True}],
                }
            ]
        },
    )


def by_name(checks):
    return {c.name: c for c in checks}


def test_all_good(rsps):
    tokens = FakeTokens({TEAMS_RESOURCE: {"wids": [TEAMS_ADMIN_WID]}, GRAPH: {"roles": ALL_GRAPH}})
    mock_reads(rsps)
    checks = run_doctor(configured(), token_provider=tokens, http=make_client(tokens))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    found = by_name(checks)
    assert "secret credential" in found["configuration"].detail
    assert "doctor-secret-1" not in " ".join(c.detail for c in checks)
    assert "Teams Administrator" in found["directory role"].detail
    assert found["read: Teams admin API"].detail == "2 messaging policies"
    assert "Contoso Health" in found["read: Graph"].detail


def test_missing_role_and_permissions_in_plain_words(rsps):
    tokens = FakeTokens({TEAMS_RESOURCE: {"wids": []}, GRAPH: {"roles": ["User.Read.All"]}})
    rsps.get(POLICIES, status=403, json={"error": {"code": "Forbidden", "message": "no role"}})
    rsps.get(f"{GRAPH}/v1.0/organization", status=403, json={"error": {"code": "Denied"}})
    found = by_name(run_doctor(configured(), token_provider=tokens, http=make_client(tokens)))
    role = found["directory role"]
    assert not role.ok
    assert "the app has no directory role" in role.detail
    assert "assign Teams Administrator" in role.detail
    assert "Roles and administrators" in role.fix
    perms = found["Graph permissions"]
    assert not perms.ok
    assert (
        "Group.Read.All, Organization.Read.All, TeamsPolicyUserAssign.ReadWrite.All" in perms.detail
    )
    assert "Grant admin consent" in perms.fix
    assert not found["read: Teams admin API"].ok
    # A read refused: the roles that can read (and the one apply needs).
    assert "Global Reader or Teams Reader (or Teams Administrator" in (
        found["read: Teams admin API"].detail
    )
    assert "Organization.Read.All" in found["read: Graph"].detail


def test_reader_role_is_enough_to_read(rsps):
    tokens = FakeTokens(
        {
            TEAMS_RESOURCE: {"wids": [GLOBAL_READER_WID]},
            GRAPH: {"roles": ["Directory.Read.All", ALL_GRAPH[-1]]},
        }
    )
    mock_reads(rsps)
    found = by_name(run_doctor(configured(), token_provider=tokens, http=make_client(tokens)))
    assert found["directory role"].ok
    assert "Global Reader only" in found["directory role"].detail
    assert "assign Teams Administrator" in found["directory role"].fix
    assert found["Graph permissions"].ok


def test_no_credential_stops_at_configuration():
    (check,) = run_doctor(Settings.load(env_file=None))
    assert not check.ok and check.name == "configuration"
    assert "AZURE_CLIENT_SECRET" in check.detail


class FailingTokens(FakeTokens):
    def get_token(self, resource: str) -> str:
        raise AuthError("could not get a token: invalid_client: AADSTS7000215")


def test_token_failure_skips_dependent_checks():
    found = by_name(run_doctor(configured(), token_provider=FailingTokens()))
    assert found["configuration"].ok
    assert not found["token: Teams admin API"].ok
    assert "AADSTS7000215" in found["token: Teams admin API"].detail
    assert not found["token: Graph"].ok
    assert "directory role" not in found and "read: Graph" not in found


class UntrustedTokens(FakeTokens):
    def get_token(self, resource: str) -> str:
        raise AuthError("could not get a token: SSLError(CERTIFICATE_VERIFY_FAILED)")


def test_a_tls_failure_is_not_blamed_on_the_credential():
    found = by_name(run_doctor(configured(), token_provider=UntrustedTokens()))
    fix = found["token: Teams admin API"].fix
    assert "REQUESTS_CA_BUNDLE" in fix and "credential" not in fix
    assert (
        "fix the credential"
        in by_name(run_doctor(configured(), token_provider=FailingTokens()))[
            "token: Teams admin API"
        ].fix
    )


class UnreachableLogin(FakeTokens):
    def get_token(self, resource: str) -> str:
        raise LoginUnreachableError("could not reach the login endpoint https://login.test: ...")


def test_an_unreachable_login_is_not_blamed_on_the_credential():
    fix = by_name(run_doctor(configured(), token_provider=UnreachableLogin()))[
        "token: Teams admin API"
    ].fix
    assert "HTTPS_PROXY" in fix and "AZURE_AUTHORITY_HOST" in fix
    assert "fix the credential" not in fix


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": APP}, "no credential"),
        (
            {
                "AZURE_TENANT_ID": TENANT,
                "AZURE_CLIENT_ID": APP,
                "AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/app.pem",
            },
            "/nonexistent/app.pem",
        ),
    ],
)
def test_doctor_cli_shows_a_bad_credential_as_its_failed_configuration_row(
    monkeypatch, capsys, env, said
):
    from bridge.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main(["doctor"])
    out, err = capsys.readouterr()
    assert info.value.code == 1
    assert "[FAIL] configuration:" in out and said in out
    assert "0 of 1 checks passed." in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("cloud", "version", "ok"),
    [("commercial", "4.9.0", True), ("gcchigh", "4.9.0", False), ("dod", "5.0.1", True)],
)
def test_powershell_doctor_judges_the_module_by_the_configured_cloud(
    clean_env, monkeypatch, cloud, version, ok
):
    from fake_pwsh import FakePwsh, hospital

    from bridge.commands import run_doctor_checks
    from bridge.session import Session, SessionOptions

    fake = FakePwsh.install(clean_env)
    fake.seed(hospital())
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FAKE_PWSH_MODULE_VERSION", version)
    monkeypatch.setenv("BRIDGE_CLOUD", cloud)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)  # and no credential: configuration fails

    checks = by_name(run_doctor_checks(Session(SessionOptions(transport="powershell"))))

    assert not checks["configuration"].ok
    module = checks["MicrosoftTeams module"]
    assert module.ok is ok, module
    needed = "5.0.1" if cloud in ("gcchigh", "dod") else "4.7.1"
    assert f"{needed} or later" in module.detail or f"(minimum {needed})" in module.detail
    where = {"commercial": "commercial", "gcchigh": "GCC High", "dod": "DoD"}[cloud]
    assert module.detail.endswith(f"for app-only sign-in in the {where} cloud")
    assert checks["PowerShell version"].ok
