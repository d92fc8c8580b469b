"""The PowerShell transport against the fake pwsh (tests/fake_pwsh): protocol, tokens, errors,
timeouts, crashes, bulk, doctor."""

from __future__ import annotations

import base64
import importlib.resources
import io
import json
import logging
import os
import time
from types import SimpleNamespace

import pytest
from fake_pwsh import TENANT_ID, FakeGraph, FakePwsh, hospital
from hypothesis import given
from hypothesis import settings as budget
from hypothesis import strategies as st

from bridge import catalogue
from bridge.auth import TEAMS_RESOURCE
from bridge.backends.base import Wanted
from bridge.backends.powershell import (
    PWSH_ARGS,
    PowerShellBackend,
    PwshSession,
    error_from_record,
)
from bridge.desired import parse_desired
from bridge.doctor import powershell_checks as doctor_checks
from bridge.errors import (
    ApiError,
    ConflictError,
    DesiredStateError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    PlanError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from bridge.state import TenantState

GRAPH_URL = "https://graph.example.test"


def _jwt(claims: dict, signature: str) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.{signature}"


class Tokens:
    """A TokenProvider handing out JWT-shaped tokens with recognisable signatures."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}

    def get_token(self, resource: str) -> str:
        sig = "graphSECRETsig" if resource == GRAPH_URL else "teamsSECRETsig"
        token = _jwt({"tid": TENANT_ID, "aud": resource}, sig)
        self.issued[resource] = token
        return token


@pytest.fixture
def seed() -> TenantState:
    return hospital()


@pytest.fixture
def fake(tmp_path, monkeypatch, seed) -> FakePwsh:
    f = FakePwsh.install(tmp_path)
    f.seed(seed)
    for name, value in f.env().items():
        monkeypatch.setenv(name, value)
    return f


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


def make_backend(seed: TenantState, tokens: Tokens, **kw) -> PowerShellBackend:
    settings = SimpleNamespace(
        graph_url=GRAPH_URL,
        tenant_id="contoso.onmicrosoft.com",
        cloud=kw.pop("cloud", "commercial"),
    )
    kw.setdefault("timeout", 20.0)
    return PowerShellBackend(
        settings, tokens, graph=FakeGraph(seed), poll_interval=0, sleep=lambda s: None, **kw
    )


@pytest.fixture
def backend(fake, seed, tokens):
    b = make_backend(seed, tokens)
    yield b
    b.close()


# --------------------------------------------------------------------------- reads


def test_read_returns_the_tenant_with_bare_names_and_resolved_directory(backend, seed):
    state = backend.read(
        Wanted(
            groups=["Volunteers", "Kitchen", "Nobody"],
            users=["USER010@northwind-health.org", "ghost@x.org"],
        )
    )

    assert state.tenant_id == TENANT_ID  # from the token, not the configured domain
    assert sorted(p.name for p in state.policies.values()) == [
        "Clinical",
        "Default",
        "EduFaculty",
        "EduStudent",
        "Global",
        "Kitchen",
    ]
    assert state.policy("clinical").settings["ReadReceiptsEnabledType"] == "Everyone"
    assert "Key" not in state.policy("Clinical").settings
    assert [(g.group_name, g.policy, g.rank) for g in state.ranked_groups()] == [
        ("Physicians", "Clinical", 1),
        ("Kitchen", "Kitchen", 2),
    ]
    assert state.user_assignments == seed.user_assignments
    assert [g.display_name for g in state.directory.groups_by_ref("volunteers")] == [
        "Volunteers",
        "Volunteers",
    ]
    assert (
        state.directory.user_by_ref("user010@northwind-health.org").id
        == seed.directory.user_by_ref("user010@northwind-health.org").id
    )
    assert state.directory.searched_users == {"ghost@x.org"}
    assert state.directory.searched_groups == {"Nobody"}


def test_the_directory_is_every_user_graph_lists(backend, fake, seed):
    unassigned_by_id = "00000020-1111-4222-8333-444455556666"
    state = backend.read(Wanted(users=["USER005@northwind-health.org", unassigned_by_id]))

    # The whole tenant, not only the three users with a direct assignment: the safety limit's
    # share of users and a snapshot's directory count everyone, as through REST.
    assert state.directory.users == seed.directory.users
    assert state.user_assignments == seed.user_assignments
    assert backend.graph.listings == 1
    # Every name the file uses was in the listing: no per-name lookup through pwsh.
    assert [c["params"] for c in fake.calls("Get-CsOnlineUser")] == [["Filter"]]
    assert state.directory.searched_users == set()


def test_wanted_users_missing_from_graph_are_looked_up_with_quoted_filters(backend, fake):
    state = backend.read(
        Wanted(users=["o'brien@northwind-health.org", "user005@northwind-health.org"])
    )
    # One call for the assigned users, one filter for the name Graph did not list (a quote left
    # undoubled would have been an error record from the fake's filter parser).
    assert len(fake.calls("Get-CsOnlineUser")) == 2
    assert state.directory.user_by_ref("user005@northwind-health.org") is not None
    assert state.directory.searched_users == {"o'brien@northwind-health.org"}


def test_a_graph_listing_that_fails_fails_the_read(fake, seed, tokens):
    class BrokenGraph(FakeGraph):
        def list_users(self):
            raise ThrottledError("Graph /users: still throttled", status=429)

    backend = PowerShellBackend(
        SimpleNamespace(graph_url=GRAPH_URL, tenant_id=None, cloud="commercial"),
        tokens,
        graph=BrokenGraph(seed),
        timeout=20.0,
    )
    with backend, pytest.raises(ThrottledError, match="still throttled"):
        backend.read()


def test_pwsh_runs_in_its_own_session_so_ctrl_c_does_not_reach_it(backend, fake):
    # A Ctrl+C goes to the terminal's foreground process group: pwsh must survive it, so an
    # interrupted re-rank can still be put back through it.
    backend.read()
    proc = backend._session._proc
    assert proc is not None and proc.poll() is None
    assert os.getsid(proc.pid) != os.getsid(0)


def test_one_pwsh_process_serves_a_whole_read_and_apply(backend, fake):
    backend.read()
    backend.update_policy("Clinical", {"AllowGiphy": False})
    backend.add_group_assignment("00000004-aaaa-4bbb-8ccc-000000000004", "Kitchen", 1)
    backend.assign_users([("00000010-1111-4222-8333-444455556666", "Kitchen")])
    backend.read()
    backend.close()

    assert len(fake.record["spawns"]) == 1
    assert fake.calls()[-1]["cmdlet"] == "Disconnect-MicrosoftTeams"
    assert [c["cmdlet"] for c in fake.calls()[:2]] == ["Import-Module", "Connect-MicrosoftTeams"]


# --------------------------------------------------------------------------- tokens


def test_tokens_go_through_stdin_never_argv_nor_logs(fake, seed, tokens, caplog):
    caplog.set_level(logging.DEBUG)
    backend = make_backend(seed, tokens)
    backend.read()
    backend.close()

    record = fake.record
    assert record["spawns"][0]["argv"] == list(PWSH_ARGS)
    assert record["tokens"] == [
        tokens.issued[GRAPH_URL],
        tokens.issued["48ac35b8-9aa8-4d74-927d-1f4a14a0b239"],
    ]
    assert "AccessTokens" in fake.calls("Connect-MicrosoftTeams")[0]["params"]
    assert "SECRETsig" not in caplog.text
    assert caplog.text  # the session did log (so the assertion above looked at something)


class ExpiringTokens(Tokens):
    """Tokens valid for an hour from the test's clock, each one different."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock
        self.count = 0

    def get_token(self, resource: str) -> str:
        self.count += 1
        claims = {"tid": TENANT_ID, "aud": resource, "exp": int(self.clock[0]) + 3600}
        token = _jwt(claims, f"sig{self.count}SECRET")
        self.issued[resource] = token
        return token


def test_an_unreadable_token_tenant_is_none_not_the_configured_one(fake, seed):
    class Opaque(Tokens):
        def get_token(self, resource: str) -> str:
            return "opaque-SECRET-token"

    settings = SimpleNamespace(graph_url=GRAPH_URL, tenant_id=TENANT_ID, cloud="commercial")
    with PowerShellBackend(settings, Opaque(), graph=FakeGraph(seed), timeout=20.0) as backend:
        assert backend.read().tenant_id is None


def test_expiring_tokens_are_renewed_before_a_call(fake, seed):
    now = [1_700_000_000.0]
    tokens = ExpiringTokens(now)
    with make_backend(seed, tokens, clock=lambda: now[0]) as backend:
        backend.read()
        first = list(fake.record["tokens"])
        now[0] += 3600 - 301  # 301 s left: still fine
        backend.delete_policy("Kitchen") if False else backend.read()
        assert fake.record["tokens"] == first
        assert len(fake.calls("Connect-MicrosoftTeams")) == 1
        now[0] += 2  # 299 s left: connect again with fresh tokens, before the call
        backend.update_policy("Kitchen", {"AllowGiphy": True})
    connects = [c["cmdlet"] for c in fake.calls()]
    assert connects.count("Connect-MicrosoftTeams") == 2
    assert connects.index("Connect-MicrosoftTeams", 3) < connects.index(
        "Set-CsTeamsMessagingPolicy"
    )
    renewed = fake.record["tokens"][2:]
    assert len(renewed) == 2 and not set(renewed) & set(first)
    assert renewed == [tokens.issued[GRAPH_URL], tokens.issued[TEAMS_RESOURCE]]


def test_a_token_echoed_by_pwsh_is_redacted_from_errors(backend, tokens):
    backend.read()
    leaked = tokens.issued[GRAPH_URL]
    err = error_from_record(
        {"category": "InvalidData", "message": f"bad token {leaked}", "fqid": "X"},
        "Get-CsOnlineUser",
        backend._session.redact,
    )
    assert "SECRETsig" not in str(err)


# --------------------------------------------------------------------------- writes


def test_description_with_quotes_and_subexpression_round_trips_as_data(backend, fake):
    text = "Ärzte: Ward 7 \"quotes\" and $(Get-Date); `whoami` 'single' ✓"
    backend.create_policy("Night Shift", {"Description": text, "GiphyRatingType": "STRICT"})
    backend.update_policy("night shift", {"ReadReceiptsEnabledType": "everyone"})

    policy = backend.read().policy("Night Shift")
    assert policy.settings["Description"] == text
    assert policy.settings["GiphyRatingType"] == "Strict"  # the service's casing
    assert policy.settings["ReadReceiptsEnabledType"] == "Everyone"
    assert policy.raw["Identity"] == "Tag:Night Shift"


@pytest.mark.parametrize("text", ["2024-05-01T08:00:00Z", "2024-05-01T08:00:00.5+02:00"])
def test_a_date_looking_description_reaches_the_cmdlet_unchanged(backend, fake, text):
    # ConvertFrom-Json on PowerShell 6+ would make "05/01/2024 08:00:00" of it.
    backend.create_policy("Rota", {"Description": text})
    assert backend.read().policy("Rota").settings["Description"] == text


def test_delete_policy_and_global_reset(backend, fake):
    backend.update_policy("Global", {"AllowGiphy": False})
    backend.delete_policy("Global")  # resets, as the service does
    backend.assign_users([])
    backend.delete_policy("tag:EduStudent")
    state = backend.read()
    assert state.policy("Global").settings["AllowGiphy"] is True
    assert state.policy("EduStudent") is None


def test_group_assignments_are_renumbered(backend, fake):
    backend.add_group_assignment("00000002-aaaa-4bbb-8ccc-000000000002", "Clinical", 1)
    ranks = {g.group_name: g.rank for g in fake.tenant().group_assignments.values()}
    assert ranks == {"Nursing": 1, "Physicians": 2, "Kitchen": 3}

    backend.remove_group_assignment("00000001-aaaa-4bbb-8ccc-000000000001")
    state = backend.read()
    assert [(g.group_name, g.rank) for g in state.ranked_groups()] == [
        ("Nursing", 1),
        ("Kitchen", 2),
    ]


def test_grant_and_remove_direct_assignments_one_by_one(backend, fake, seed):
    users = sorted(seed.directory.users)
    result = backend.assign_users([(users[5], "Kitchen"), (users[6], "kitchen")])
    assert (result.requested, result.succeeded, result.failures) == (2, 2, [])
    removed = backend.unassign_users([users[5], users[0]])
    assert removed.succeeded == 2

    direct = fake.tenant().user_assignments
    assert users[5] not in direct and users[0] not in direct
    assert direct[users[6]].policy == "Kitchen"
    assert len(fake.calls("Grant-CsTeamsMessagingPolicy")) == 4
    assert fake.calls("New-CsBatchPolicyAssignmentOperation") == []


def test_a_grant_that_fails_for_one_user_is_reported_for_that_user(backend):
    result = backend.assign_users(
        [("ghost@nowhere.org", "Kitchen"), ("user001@northwind-health.org", "Kitchen")]
    )
    assert result.succeeded == 1
    assert [f.user_id for f in result.failures] == ["ghost@nowhere.org"]
    assert "Management object not found" in result.failures[0].message


def test_12000_users_go_in_three_batches_with_per_user_failures(tmp_path, monkeypatch, tokens):
    seed = hospital(users=12_000)
    fake = FakePwsh.install(tmp_path)
    fake.seed(seed)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    users = [*sorted(seed.directory.users)[:11_998], "ghost-1", "ghost-2"]
    with make_backend(seed, tokens) as backend:
        result = backend.assign_users([(u, "Kitchen") for u in users])

    assert len(fake.calls("New-CsBatchPolicyAssignmentOperation")) == 3
    assert len(result.operation_ids) == 3
    assert (result.requested, result.succeeded) == (12_000, 11_998)
    assert sorted(f.user_id for f in result.failures) == ["ghost-1", "ghost-2"]
    # Every operation was polled until Completed (the fake says InProgress first).
    assert len(fake.calls("Get-CsBatchPolicyAssignmentOperation")) == 6
    assert (
        sum(1 for a in fake.tenant().user_assignments.values() if a.policy == "Kitchen") == 11_998
    )


# --------------------------------------------------------------------------- errors


def test_error_records_map_to_the_rest_transport_types(backend):
    with pytest.raises(NotFoundError, match="Set-CsTeamsMessagingPolicy -Identity 'Nope'"):
        backend.update_policy("Nope", {"AllowGiphy": True})
    with pytest.raises(ConflictError, match="already exists"):
        backend.create_policy("clinical", {})
    with pytest.raises(ConflictError, match="assigned to one or more groups"):
        backend.delete_policy("Clinical")
    with pytest.raises(ConflictError):
        backend.add_group_assignment("00000001-aaaa-4bbb-8ccc-000000000001", "Kitchen", 1)
    with pytest.raises(NotFoundError):
        backend.remove_group_assignment("00000006-aaaa-4bbb-8ccc-000000000006")
    with pytest.raises(ApiError, match="NamedParameterNotFound"):
        backend.update_policy("Clinical", {"AllowGiphys": True})


def test_access_denied_raises_forbidden_with_the_role_hint(fake, seed, tokens, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_DENY", "Get-CsTeamsMessagingPolicy")
    with make_backend(seed, tokens) as backend, pytest.raises(ForbiddenError) as info:
        backend.read()
    assert "Teams Administrator directory role" in str(info.value)


def test_a_403_in_the_message_only_keeps_the_directory_role_hint():
    record = {
        "category": "InvalidOperation",
        "message": "Response status code does not indicate success: 403 (Forbidden).",
        "fqid": "Microsoft.Teams.ConfigAPI.Cmdlets.GetCsGroupPolicyAssignment_Get",
    }
    err = error_from_record(record, "Get-CsGroupPolicyAssignment")
    assert type(err) is ForbiddenError and err.status == 403
    assert "Teams Administrator directory role" in str(err)


@pytest.mark.parametrize(
    "cmdlet", ["Get-CsTeamsMessagingPolicy", "Get-CsGroupPolicyAssignment", "Get-CsOnlineUser"]
)
def test_a_non_terminating_error_fails_the_read_never_reads_as_absent(
    fake, seed, tokens, monkeypatch, cmdlet
):
    # The module's script functions ignore the driver's $ErrorActionPreference: the 403 is
    # written, not thrown, and the cmdlet outputs nothing. That must not read as "no rows".
    monkeypatch.setenv("FAKE_PWSH_SOFT_ERROR_ON", cmdlet)
    with make_backend(seed, tokens) as backend, pytest.raises(ApiError) as info:
        backend.read()
    assert str(info.value).startswith(cmdlet)
    assert "403 Forbidden" in str(info.value)


def test_a_read_that_met_an_error_the_module_handled_still_fails(fake, seed, tokens, monkeypatch):
    # A record -ErrorVariable holds after a Get-* that did not stop (an internal retry) may
    # mean missing rows: the read fails rather than let them read as "absent".
    monkeypatch.setenv("FAKE_PWSH_HANDLED_ERROR_ON", "Get-CsGroupPolicyAssignment")
    with make_backend(seed, tokens) as backend, pytest.raises(ApiError) as info:
        backend.read()
    assert "503 (Service Unavailable)" in str(info.value)


def test_an_error_the_module_handled_in_a_write_is_a_warning(
    fake, seed, tokens, monkeypatch, caplog
):
    # After a write that went through, the handled record is a warning, not a failure.
    monkeypatch.setenv("FAKE_PWSH_HANDLED_ERROR_ON", "Set-CsTeamsMessagingPolicy")
    with make_backend(seed, tokens) as backend, caplog.at_level(logging.WARNING):
        backend.update_policy("Clinical", {"AllowGiphy": False})
        state = backend.read()
    assert state.policies["clinical"].settings["AllowGiphy"] is False
    assert "error handled inside Set-CsTeamsMessagingPolicy" in caplog.text


@pytest.mark.parametrize(
    ("category", "fqid", "expected"),
    [
        ("ObjectNotFound", "NotFound,X", NotFoundError),
        ("ResourceExists", "", ConflictError),
        ("ResourceBusy", "", ConflictError),
        ("PermissionDenied", "", ForbiddenError),
        ("AuthenticationError", "", UnauthorizedError),
        ("LimitsExceeded", "", ThrottledError),
        ("InvalidOperation", "", ApiError),
        ("ObjectNotFound", "CommandNotFoundException", TransportError),
        ("ResourceUnavailable", "Modules_ModuleNotFound,Import", TransportError),
        (
            "NotSpecified",
            "Forbidden,Microsoft.Teams.ConfigAPI.Cmdlets.GetCsOnlineUser",
            ForbiddenError,
        ),
        ("InvalidOperation", "Unauthorized,Microsoft.Teams.ConfigAPI.Cmdlets.X", UnauthorizedError),
        ("NotSpecified", "TooManyRequests,Microsoft.Teams.ConfigAPI.Cmdlets.X", ThrottledError),
    ],
)
def test_error_categories(category, fqid, expected):
    err = error_from_record({"category": category, "message": "m", "fqid": fqid}, "Get-X")
    assert type(err) is expected
    assert str(err).startswith("Get-X: m")


def test_missing_module_says_how_to_install_it(fake, seed, tokens, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_MODULE_VERSION", "none")
    with make_backend(seed, tokens) as backend:
        with pytest.raises(TransportError) as info:
            backend.read()
        assert "Install-Module MicrosoftTeams -Scope CurrentUser" in str(info.value)
        with pytest.raises(TransportError, match="failed to start earlier"):
            backend.read()
    assert len(fake.record["spawns"]) == 1


def test_host_output_without_a_newline_does_not_swallow_the_answer(fake, seed, tokens, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_PARTIAL_ON", "Get-CsGroupPolicyAssignment")
    started = time.monotonic()
    with make_backend(seed, tokens, timeout=3.0) as backend:
        state = backend.read()
    assert len(state.group_assignments) == 2
    assert time.monotonic() - started < 3  # answered, not timed out


def test_the_reader_finds_a_begin_marker_after_partial_output():
    session = PwshSession()
    answer = json.dumps({"id": "7", "ok": True, "result": [1]})
    session._proc = SimpleNamespace(  # type: ignore[assignment]
        stdout=io.StringIO(
            f"WARNING: no newline<<<teams-bridge:begin:7>>>\n{answer}\n<<<teams-bridge:end:7>>>\n"
        )
    )
    session._read_stdout()
    assert session._answers.get_nowait() == ("7", answer)
    assert session._answers.get_nowait() is None  # EOF


def test_a_group_assignment_row_without_group_id_is_an_invalid_response(
    fake, seed, tokens, monkeypatch
):
    monkeypatch.setenv("FAKE_PWSH_DROP_FIELD", "Get-CsGroupPolicyAssignment:GroupId")
    with make_backend(seed, tokens) as backend, pytest.raises(InvalidResponseError) as info:
        backend.read()
    assert "Get-CsGroupPolicyAssignment returned a row that cannot be read" in str(info.value)


def test_hung_pwsh_raises_transport_error_within_the_timeout(fake, seed, tokens, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_HANG_ON", "Get-CsGroupPolicyAssignment")
    backend = make_backend(seed, tokens, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(TransportError, match="did not answer Get-CsGroupPolicyAssignment"):
        backend.read()
    assert time.monotonic() - started < 6  # 1.5 s to answer the hung call, plus start-up
    with pytest.raises(TransportError, match="was stopped"):
        backend.delete_policy("Kitchen")
    backend.close()


def test_crashed_pwsh_raises_transport_error_with_what_it_was_doing(
    fake, seed, tokens, monkeypatch
):
    monkeypatch.setenv("FAKE_PWSH_CRASH_ON", "Remove-CsGroupPolicyAssignment")
    with make_backend(seed, tokens) as backend:
        with pytest.raises(TransportError) as info:
            backend.remove_group_assignment("00000003-aaaa-4bbb-8ccc-000000000003")
        message = str(info.value)
        assert "exited (exit code 134) while running Remove-CsGroupPolicyAssignment" in message
        assert "Unhandled exception" in message  # stderr's last words
        with pytest.raises(TransportError):
            backend.read()


def test_pwsh_missing_from_path(seed, tokens):
    backend = make_backend(seed, tokens, pwsh="pwsh-not-installed-here")
    with pytest.raises(TransportError, match="not found on PATH"):
        backend.read()


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_versions(fake):
    checks = {c.name: c for c in doctor_checks()}
    assert checks["pwsh on PATH"].ok and checks["pwsh on PATH"].detail.endswith("/pwsh")
    assert checks["PowerShell version"].ok
    assert checks["PowerShell version"].detail.startswith("7.4.6 (minimum 7.2) for the")
    assert checks["MicrosoftTeams module"].ok
    assert checks["MicrosoftTeams module"].detail.startswith("7.9.0")
    assert fake.record["tokens"] == []  # doctor does not sign in


@pytest.mark.parametrize(
    ("version", "fix"),
    [
        ("none", "Install-Module MicrosoftTeams -Scope CurrentUser"),
        ("4.6.0", "Update-Module MicrosoftTeams"),
    ],
)
def test_doctor_explains_a_missing_or_old_module(fake, monkeypatch, version, fix):
    monkeypatch.setenv("FAKE_PWSH_MODULE_VERSION", version)
    module = doctor_checks()[-1]
    assert module.name == "MicrosoftTeams module" and not module.ok
    assert fix in module.fix


def test_doctor_without_pwsh():
    [check] = doctor_checks("pwsh-not-installed-here")
    assert not check.ok and "PowerShell 7" in check.fix


def test_a_batch_whose_outcome_is_not_read_in_time_stops_with_the_batches_sent(
    fake, seed, tokens, monkeypatch
):
    import bridge.backends.powershell_bulk as ps

    monkeypatch.setattr(ps, "BATCH_SIZE", 10)
    users = sorted(seed.directory.users)[:25]
    # The fake answers InProgress on the first poll: with no time to wait, batch 1 times out.
    with (
        make_backend(seed, tokens, batch_timeout=0) as backend,
        pytest.raises(ApiError, match="still InProgress") as err,
    ):
        backend.assign_users([(u, "Kitchen") for u in users])
    partial = err.value.partial
    assert partial.write_requests == 3 and len(partial.operation_ids) == 3
    first, *others = partial.chunks
    assert first.user_ids == tuple(users[:10]) and first.operation_id == partial.operation_ids[0]
    assert first.unknown and "still InProgress" in (first.error or "")
    assert [(c.user_ids, c.operation_id, c.unknown, c.error) for c in others] == [
        (tuple(users[10:20]), partial.operation_ids[1], True, None),
        (tuple(users[20:]), partial.operation_ids[2], True, None),
    ]


def test_a_denied_grant_stops_the_one_by_one_grants_with_what_was_sent(
    fake, seed, tokens, monkeypatch
):
    monkeypatch.setenv("FAKE_PWSH_DENY", "Grant-CsTeamsMessagingPolicy")
    users = sorted(seed.directory.users)[:3]
    with make_backend(seed, tokens) as backend, pytest.raises(ForbiddenError) as err:
        backend.unassign_users(users)
    partial = err.value.partial
    (denied,) = partial.chunks  # the other two were never sent
    assert denied.user_ids == (users[0],) and denied.error
    assert [f.user_id for f in partial.failures] == [users[0]]
    assert len(fake.calls("Grant-CsTeamsMessagingPolicy")) == 1


def test_one_groups_assignment_is_read_with_its_group_id(backend, fake):
    clin = "00000001-aaaa-4bbb-8ccc-000000000001"
    held = backend.group_assignment(clin)
    assert held is not None and (held.group_id, held.policy, held.rank) == (clin, "Clinical", 1)
    assert backend.group_assignment("00000006-aaaa-4bbb-8ccc-000000000006") is None
    assert [c["params"] for c in fake.calls("Get-CsGroupPolicyAssignment")] == [
        ["GroupId", "PolicyType"],
        ["GroupId", "PolicyType"],
    ]


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(("version", "ok"), [("7.1.3", False), ("7.2.0", True), ("6.2.7", False)])
def test_powershell_older_than_7_2_is_refused_before_signing_in(
    fake, seed, tokens, monkeypatch, version, ok
):
    monkeypatch.setenv("FAKE_PWSH_PS_VERSION", version)
    with make_backend(seed, tokens) as backend:
        if ok:
            backend.read()
            return
        with pytest.raises(TransportError) as info:
            backend.read()
    assert str(info.value).startswith(
        f"PowerShell (pwsh) is version {version}; teams-bridge needs 7.2 or later for the "
        "MicrosoftTeams module, which supports nothing older since 6.3.0: install PowerShell 7.2"
    )
    assert fake.record["tokens"] == []  # no Connect-MicrosoftTeams
    assert fake.calls() == []


@pytest.mark.parametrize(
    ("cloud", "version", "needed", "ok"),
    [
        ("commercial", "4.7.1", "4.7.1", True),
        ("commercial", "4.7.0", "4.7.1", False),
        ("gcc", "4.7.1", "4.7.1", True),
        ("gcchigh", "5.0.0", "5.0.1", False),
        ("gcchigh", "5.0.1", "5.0.1", True),
        ("dod", "4.9.3", "5.0.1", False),
        ("dod", "7.9.0", "5.0.1", True),
    ],
)
def test_the_module_version_app_only_sign_in_needs_depends_on_the_cloud(
    fake, seed, tokens, monkeypatch, cloud, version, needed, ok
):
    monkeypatch.setenv("FAKE_PWSH_MODULE_VERSION", version)
    names = {"commercial": "commercial", "gcc": "GCC", "gcchigh": "GCC High", "dod": "DoD"}
    with make_backend(seed, tokens, cloud=cloud) as backend:
        if ok:
            backend.read()
        else:
            with pytest.raises(TransportError) as info:
                backend.read()
            assert str(info.value) == (
                f"the MicrosoftTeams PowerShell module is version {version}; teams-bridge needs "
                f"{needed} or later for app-only sign-in in the {names[cloud]} cloud: "
                "Update-Module MicrosoftTeams (or Install-Module MicrosoftTeams -Scope CurrentUser)"
            )
    assert fake.record.get("imports", []) == ([needed] if ok else [])
    assert bool(fake.record["tokens"]) is ok

    [module] = [c for c in doctor_checks(cloud=cloud) if c.name == "MicrosoftTeams module"]
    assert module.ok is ok
    if ok:
        assert module.detail == (
            f"{version} (minimum {needed}) for app-only sign-in in the {names[cloud]} cloud"
        )
    else:
        assert module.detail == (
            f"{version} installed; teams-bridge needs {needed} or later for app-only sign-in in "
            f"the {names[cloud]} cloud"
        )
        assert module.fix.startswith("Update-Module MicrosoftTeams")


def test_doctor_reports_an_old_powershell_with_the_fix(fake, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_PS_VERSION", "7.0.3")
    checks = {c.name: c for c in doctor_checks(cloud="gcchigh")}
    ps = checks["PowerShell version"]
    assert not ps.ok
    assert ps.detail == (
        "7.0.3 installed; teams-bridge needs 7.2 or later for the MicrosoftTeams module, which "
        "supports nothing older since 6.3.0"
    )
    assert ps.fix.startswith("install PowerShell 7.2 or later (https://learn.microsoft.com/")


def test_doctor_without_a_readable_configuration_names_both_module_minimums(fake, monkeypatch):
    monkeypatch.setenv("FAKE_PWSH_MODULE_VERSION", "4.8.0")
    [module] = [c for c in doctor_checks(cloud=None) if c.name == "MicrosoftTeams module"]
    assert module.ok  # judged as commercial, the cloud being unknown ...
    assert module.detail == "4.8.0 (minimum 4.7.1) for app-only sign-in (5.0.1 in GCC High and DoD)"


# --------------------------------------------------------------------------- quotes in filters

QUOTES = ["'", "\u2018", "\u2019", "\u201a", "\u201b"]  # what PowerShell reads as a single quote


@pytest.mark.parametrize("quote", QUOTES, ids=["ascii", "u2018", "u2019", "u201a", "u201b"])
def test_a_user_name_with_any_single_quote_is_looked_up_as_written(fake, tokens, quote):
    """The user is in pwsh's directory but not in Graph's listing, so the lookup goes through a
    Get-CsOnlineUser filter; a quote left undoubled ends the literal early (an error record from
    the fake, whose filter parser reads quotes as PowerShell does)."""
    from bridge.state import User

    graph_view = hospital()
    tenant = hospital()
    upn = f"o{quote}brien{quote}{quote}@northwind-health.org"
    hidden = User("00000099-1111-4222-8333-444455556666", upn, "Ann O'Brien", "Nursing")
    other = User("00000098-1111-4222-8333-444455556666", "x@northwind-health.org", "X", "Kitchen")
    tenant.directory.add_user(hidden)
    tenant.directory.add_user(other)
    fake.seed(tenant)
    # With the quote undoubled this would read as two clauses, the second matching everyone.
    injection = f"nobody{quote} -or UserPrincipalName -ne {quote}z@northwind-health.org"

    with make_backend(graph_view, tokens) as backend:
        state = backend.read(Wanted(users=[upn, injection]))

    found = state.directory.user_by_ref(upn)
    assert found is not None and found.id == hidden.id
    assert state.directory.user_by_ref("x@northwind-health.org") is None
    assert state.directory.searched_users == {injection}
    assert len(fake.calls("Get-CsOnlineUser")) == 2


@budget(max_examples=300, deadline=None)  # budget: 300 names, ~0.3 s
@given(st.text(alphabet=st.sampled_from([*QUOTES, "a", " ", "-", "@", '"', "$", "`"]), max_size=12))
def test_every_quoted_name_reads_back_as_itself(name):
    from fake_pwsh.fake_pwsh import parse_filter

    from bridge.backends.powershell import _quote

    assert parse_filter(f"UserPrincipalName -eq {_quote(name)}") == [
        ("UserPrincipalName", "eq", name)
    ]


# --------------------------------------------------------------------------- reserved parameters


def _driver_traits():
    from fake_pwsh.fake_pwsh import DriverTraits

    text = importlib.resources.files("bridge.backends").joinpath("powershell_driver.ps1")
    return DriverTraits.of(text.read_text(encoding="utf-8"))


def test_the_driver_refuses_the_common_parameters_the_catalogue_names():
    reserved = set(_driver_traits().reserved_parameters)
    assert reserved == {*catalogue.COMMON_PARAMETERS, *catalogue.COMMON_PARAMETERS.values()}


def _set_kitchen(backend: PowerShellBackend, **params) -> list:
    """Set-CsTeamsMessagingPolicy with ``params`` as sent, past the backend's own check (as a
    request reaches the driver)."""
    return backend._session.call("Set-CsTeamsMessagingPolicy", {"Identity": "Kitchen", **params})


@pytest.mark.parametrize(
    ("key", "parameter"),
    [("WhatIf", "WhatIf"), ("whatif", "WhatIf"), ("OutVar", "OutVariable"), ("cf", "cf")],
)
def test_the_driver_refuses_a_common_parameter_in_a_request(backend, fake, key, parameter):
    before = backend.read().policy("Kitchen").settings["AllowGiphy"]
    with pytest.raises(ApiError) as info:
        _set_kitchen(backend, AllowGiphy=not before, **{key: True})
    assert f"parameter '{key}' is refused: PowerShell would bind it as the common parameter " in (
        str(info.value)
    )
    assert f"-{parameter}," in str(info.value)
    assert backend.read().policy("Kitchen").settings["AllowGiphy"] == before
    # Refused by the driver, before the cmdlet: the session carries on.
    _set_kitchen(backend, AllowGiphy=not before)
    assert backend.read().policy("Kitchen").settings["AllowGiphy"] is (not before)


def test_without_the_drivers_check_whatif_would_silently_write_nothing(
    fake, seed, tokens, monkeypatch
):
    """What the check above guards against, shown on a driver without it: PowerShell binds the
    key as -WhatIf, the cmdlet writes nothing and the call succeeds."""
    import bridge.backends.pwsh as ps

    bootstrap = ps._driver_bootstrap()
    encoded = bootstrap.split("'")[1]
    text = base64.b64decode(encoded).decode("utf-8")
    unguarded = text.replace(
        "Where-Object { Find-ReservedParameter $_ }", "Where-Object { $false }"
    )
    assert unguarded != text
    changed = base64.b64encode(unguarded.encode("utf-8")).decode("ascii")
    monkeypatch.setattr(ps, "_driver_bootstrap", lambda: bootstrap.replace(encoded, changed))
    with make_backend(seed, tokens) as backend:
        backend.read()
        _set_kitchen(backend, AllowGiphy=True, WhatIf=True)  # no error ...
        assert backend.read().policy("Kitchen").settings["AllowGiphy"] is False  # ... no write


@pytest.mark.parametrize("key", ["WhatIf", "identity", "Force", "OutVar"])
def test_a_saved_plans_setting_powershell_would_bind_as_a_parameter_is_never_sent(
    backend, fake, key
):
    backend.read()
    with pytest.raises(PlanError) as info:
        backend.update_policy("Kitchen", {"AllowGiphy": True, key: "Clinical"})
    assert f"policy 'Kitchen': setting {key!r} is read by PowerShell as the parameter -" in str(
        info.value
    )
    with pytest.raises(PlanError):
        backend.create_policy("Night", {key: True})
    assert fake.calls("Set-CsTeamsMessagingPolicy") == []
    assert fake.calls("New-CsTeamsMessagingPolicy") == []


@pytest.mark.parametrize(
    "name",
    [
        *catalogue.COMMON_PARAMETERS,
        *(n.upper() for n in catalogue.COMMON_PARAMETERS),
        *(n.lower() for n in catalogue.COMMON_PARAMETERS),
        *catalogue.COMMON_PARAMETERS.values(),
        "OutVar",
        "ErrorAct",
        "Conf",
        "Ident",
        "force",
        "TENANT",
        "InMemory",
        "Instance",
    ],
)
def test_validation_refuses_a_setting_powershell_would_bind_as_a_parameter(name):
    text = f"policies:\n  Kitchen:\n    extra:\n      {name}: true\n"
    with pytest.raises(DesiredStateError) as info:
        parse_desired(text.encode(), "desired.yaml")
    message = str(info.value)
    assert f"desired.yaml:4:7: error: extra setting {name!r} " in message
    assert "not a setting" in message and "remove it" in message


@pytest.mark.parametrize("name", ["AllowNewThing", "AllowChatCompose", "EnableFoo", "Inventory"])
def test_validation_keeps_new_setting_names_that_are_no_parameter(name):
    text = f"policies:\n  Kitchen:\n    extra:\n      {name}: true\n"
    desired = parse_desired(text.encode(), "desired.yaml")
    assert desired.policies["kitchen"].settings == {name: True}


def test_pwsh_is_kept_out_of_our_process_group_on_every_system():
    """Ctrl+C must not reach pwsh mid-apply: its own session on POSIX; on Windows, which ignores
    start_new_session, a new process group."""
    from bridge.backends.pwsh import detached

    assert detached("linux") == detached("darwin") == {"start_new_session": True}
    assert detached("win32") == {"creationflags": 0x200}  # CREATE_NEW_PROCESS_GROUP
