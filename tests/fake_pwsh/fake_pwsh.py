"""A stand-in for ``pwsh`` running the teams-bridge driver with the MicrosoftTeams module loaded.

It speaks the driver protocol of ``bridge/backends/powershell_driver.ps1``: the first stdin line
must be the driver bootstrap, then it answers ``hello`` and one JSON request per line between
begin/end markers, the way the module answers: ``Tag:`` identities, case-insensitive lookups, enum
values in the service's casing, error records with the module's categories, group assignment
ranks renumbered 1..n, batch operations that are ``InProgress`` on the first poll and
``Completed`` after.

The tenant is a teams-bridge snapshot (``bridge.backends.snapshot.state_to_snapshot``) in the JSON
file named by ``FAKE_PWSH_STATE``, saved after every request, plus a ``_fake`` record: ``spawns``
(each process's argv), ``tokens`` (what Connect-MicrosoftTeams received), ``calls`` (cmdlet and
parameter *names*), ``imports`` (each Import-Module's MinimumVersion) and ``operations``
(batch operations).

Knobs (environment): ``FAKE_PWSH_HANG_ON=<cmdlet>`` never answers that cmdlet;
``FAKE_PWSH_CRASH_ON=<cmdlet>`` exits without answering; ``FAKE_PWSH_DENY=<cmdlet>`` answers it
with an access-denied record; ``FAKE_PWSH_PARTIAL_ON=<cmdlet>`` prints host output without a
newline just before that cmdlet's answer; ``FAKE_PWSH_DROP_FIELD=<cmdlet>:<property>`` leaves
that property out of the cmdlet's output objects; ``FAKE_PWSH_SOFT_ERROR_ON=<cmdlet>`` makes
the module *write* a non-terminating 403 for that cmdlet (the shape the MicrosoftTeams AutoRest
functions use: ``InvalidOperation``, ``Forbidden,...`` error id) and output nothing;
``FAKE_PWSH_HANDLED_ERROR_ON=<cmdlet>`` makes the module hit an error it handles itself (an
internal retry that then succeeds): the cmdlet outputs its result and the record lands only in
the call's ``-ErrorVariable``;
``FAKE_PWSH_MODULE_VERSION`` (default 7.9.0; ``none``: not installed);
``FAKE_PWSH_PS_VERSION`` (default 7.4.6) is the PowerShell version the hello reports.

Driver semantics. The fake reads the driver it is sent and answers as pwsh running *that* text
would (``DriverTraits``): a non-terminating error becomes an ``ok: false`` answer only when the
driver invokes cmdlets with ``-ErrorAction Stop`` (script-module functions ignore the driver's
``$ErrorActionPreference``, PowerShell/PowerShell#4568); otherwise the answer is ``ok`` with the
(empty) output and the error goes to stderr, as pwsh prints it. A handled error's record is
answered as a warning when the driver collects ``-ErrorVariable`` into its warnings. An answer
starts with an empty line only when the driver's ``Write-Answer`` writes one. A driver that
parses requests with ``ConvertFrom-Json`` gets ISO-8601-looking strings turned into dates, as
PowerShell 6+ does (the parameter then sees ``05/01/2024 08:00:00``). A request whose params
name a common parameter (or its alias, or a prefix of one) is refused with the driver's record
when the driver checks them against its ``$reserved`` list; otherwise PowerShell binds it: a
write with ``-WhatIf`` does nothing. Filters are read with PowerShell's quoting: a single-quoted
literal ends at any of ' and U+2018, U+2019, U+201A, U+201B, and two in a row stand for
one.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import catalogue

OBSERVED = (
    Path(__file__).resolve().parents[2]
    / "bridge"
    / "sandbox"
    / "data"
    / "observed-builtin-policies.json"
)
POLICY_TYPE = "TeamsMessagingPolicy"
MODULE_CMDLETS = {
    "Connect-MicrosoftTeams",
    "Disconnect-MicrosoftTeams",
    "Get-CsTeamsMessagingPolicy",
    "New-CsTeamsMessagingPolicy",
    "Set-CsTeamsMessagingPolicy",
    "Remove-CsTeamsMessagingPolicy",
    "Get-CsGroupPolicyAssignment",
    "New-CsGroupPolicyAssignment",
    "Remove-CsGroupPolicyAssignment",
    "Grant-CsTeamsMessagingPolicy",
    "New-CsBatchPolicyAssignmentOperation",
    "Get-CsBatchPolicyAssignmentOperation",
    "Get-CsOnlineUser",
}


class Fail(Exception):
    """An error record: ``category`` is PowerShell's ErrorCategory name."""

    def __init__(self, category: str, message: str, fqid: str):
        super().__init__(message)
        self.record = {"category": category, "message": message, "fqid": fqid}


def not_found(message: str, cmdlet: str) -> Fail:
    return Fail("ObjectNotFound", message, f"NotFound,{cmdlet}")


def write(answer: dict[str, Any], traits: DriverTraits | None = None) -> None:
    out = sys.stdout
    if traits is not None and traits.newline_before_answer:
        out.write("\n")
    out.write(f"<<<teams-bridge:begin:{answer['id']}>>>\n")
    out.write(json.dumps(answer, separators=(",", ":")) + "\n")
    out.write(f"<<<teams-bridge:end:{answer['id']}>>>\n")
    out.flush()


def _key(name: str) -> str:
    name = name[4:] if name[:4].casefold() == "tag:" else name
    return name.casefold()


def _identity(name: str) -> str:
    bare = name[4:] if name[:4].casefold() == "tag:" else name
    return "Global" if bare.casefold() == "global" else f"Tag:{bare}"


class Tenant:
    def __init__(self, path: str):
        self.path = path
        self.data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        self.fake = self.data.setdefault("_fake", {})
        for key in ("spawns", "tokens", "calls"):
            self.fake.setdefault(key, [])
        self.fake.setdefault("operations", {})
        for key in ("policies", "group_assignments", "user_assignments", "groups", "users"):
            self.data.setdefault(key, [])
        self.handled_errors: list[str] = []  # records the last call left in -ErrorVariable
        self.users_by_ref: dict[str, dict[str, Any]] = {}
        for u in self.data["users"]:
            self.users_by_ref[u["id"].casefold()] = u
            self.users_by_ref[u["userPrincipalName"].casefold()] = u
        self.direct: dict[str, str] = {
            a["UserId"]: a["PolicyName"] for a in self.data["user_assignments"]
        }
        self.imported = False
        self.connected = False
        observed = json.loads(OBSERVED.read_text(encoding="utf-8"))["policies"]
        self.global_defaults = next(p for p in observed if p["Identity"] == "Global")
        # New policies start from the schema's defaults, which the built-in Default shows (this
        # tenant's, when it has one: its schema may know settings the observed export lacks).
        default = next(
            (p for p in self.data["policies"] if _key(p["Identity"]) == "default"),
            next(p for p in observed if p["Identity"] == "Tag:Default"),
        )
        self.new_defaults = {k: v for k, v in default.items() if catalogue.is_setting_field(k)}

    def save(self) -> None:
        self.data["user_assignments"] = [
            {
                "UserId": uid,
                "UserPrincipalName": self.users_by_ref[uid.casefold()]["userPrincipalName"]
                if uid.casefold() in self.users_by_ref
                else None,
                "PolicyName": name,
            }
            for uid, name in sorted(self.direct.items())
        ]
        tmp = self.path + ".tmp"
        Path(tmp).write_text(json.dumps(self.data), encoding="utf-8")
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ dispatch

    def run(self, cmdlet: str, params: dict[str, Any]) -> list[Any]:
        module_version = os.environ.get("FAKE_PWSH_MODULE_VERSION", "7.9.0")
        if cmdlet == "Import-Module":
            return self.import_module(params, module_version)
        if cmdlet in MODULE_CMDLETS and module_version in ("", "none"):
            raise Fail(
                "ObjectNotFound",
                f"The term '{cmdlet}' is not recognized as a name of a cmdlet, function, script "
                "file, or executable program.",
                "CommandNotFoundException",
            )
        self.imported = True  # module autoloading, as pwsh does
        if cmdlet == os.environ.get("FAKE_PWSH_DENY"):
            raise Fail(
                "PermissionDenied",
                "Access Denied. (403 Forbidden): the caller is not authorized to perform this "
                "action",
                f"Forbidden,{cmdlet}",
            )
        if cmdlet == os.environ.get("FAKE_PWSH_SOFT_ERROR_ON"):
            raise SoftFail(
                "InvalidOperation",
                "Access Denied. (403 Forbidden) The caller is not authorized to perform this "
                "operation.",
                f"Forbidden,Microsoft.Teams.ConfigAPI.Cmdlets.{cmdlet.replace('-', '')}_Get",
            )
        if cmdlet == os.environ.get("FAKE_PWSH_HANDLED_ERROR_ON"):
            self.handled_errors.append(
                f"Response status code does not indicate success: 503 (Service Unavailable). "
                f"(retried by {cmdlet})"
            )
        if cmdlet == "Connect-MicrosoftTeams":
            return self.connect(params)
        if cmdlet == "Disconnect-MicrosoftTeams":
            self.connected = False
            return []
        if not self.connected:
            raise Fail(
                "InvalidOperation",
                "Session is not established, run Connect-MicrosoftTeams before requesting "
                "access token",
                f"NotConnected,{cmdlet}",
            )
        handler = getattr(self, cmdlet.replace("-", "_").lower(), None)
        if handler is None:
            raise Fail(
                "ObjectNotFound",
                f"The term '{cmdlet}' is not recognized",
                "CommandNotFoundException",
            )
        return handler(params)

    @staticmethod
    def _only(cmdlet: str, params: dict[str, Any], allowed: set[str]) -> None:
        for name in params:
            if name.casefold() not in {a.casefold() for a in allowed}:
                raise Fail(
                    "InvalidArgument",
                    f"A parameter cannot be found that matches parameter name '{name}'.",
                    f"NamedParameterNotFound,{cmdlet}",
                )

    def import_module(self, params: dict[str, Any], version: str) -> list[Any]:
        minimum = params.get("MinimumVersion")
        self.fake.setdefault("imports", []).append(minimum)
        too_old = minimum and _version(version) < _version(str(minimum))
        if version in ("", "none") or too_old:
            shown = f" with version '{minimum}'" if minimum else ""
            raise Fail(
                "ResourceUnavailable",
                f"The specified module 'MicrosoftTeams'{shown} was not loaded because no valid "
                "module file was found in any module directory.",
                "Modules_ModuleNotFound,Microsoft.PowerShell.Commands.ImportModuleCommand",
            )
        self.imported = True
        return []

    def connect(self, params: dict[str, Any]) -> list[Any]:
        self._only("Connect-MicrosoftTeams", params, {"AccessTokens"})
        tokens = params.get("AccessTokens")
        if not isinstance(tokens, list) or len(tokens) != 2:
            raise Fail(
                "InvalidArgument",
                "AccessTokens needs a Graph and a Teams token",
                "InvalidAccessTokens,Connect-MicrosoftTeams",
            )
        self.fake["tokens"].extend(tokens)
        self.connected = True
        tid = self.data.get("tenant_id")
        return [{"Account": "app", "Environment": "AzureCloud", "Tenant": tid, "TenantId": tid}]

    # ------------------------------------------------------------------ policies

    def _policy_index(self, identity: str, cmdlet: str) -> int:
        for i, p in enumerate(self.data["policies"]):
            if _key(p["Identity"]) == _key(identity):
                return i
        raise not_found(
            f"Cannot get policy '{identity}' of type TeamsMessagingPolicy: the policy was not "
            "found.",
            cmdlet,
        )

    def _settings(self, cmdlet: str, params: dict[str, Any]) -> dict[str, Any]:
        known = {n for n, s in catalogue.SETTINGS.items() if not s.deprecated}
        for p in self.data["policies"]:
            known.update(k for k in p if catalogue.is_setting_field(k))
        by_folded = {k.casefold(): k for k in known}
        out = {}
        for name, value in params.items():
            if name.casefold() == "identity":
                continue
            canonical = by_folded.get(name.casefold())
            if canonical is None:
                raise Fail(
                    "InvalidArgument",
                    f"A parameter cannot be found that matches parameter name '{name}'.",
                    f"NamedParameterNotFound,{cmdlet}",
                )
            try:
                out[canonical] = catalogue.normalize(canonical, value)
            except ValueError as exc:
                raise Fail(
                    "InvalidArgument",
                    f"Cannot bind parameter '{canonical}'. {exc}",
                    f"ParameterArgumentTransformationError,{cmdlet}",
                ) from None
        return out

    def get_csteamsmessagingpolicy(self, params: dict[str, Any]) -> list[Any]:
        self._only("Get-CsTeamsMessagingPolicy", params, {"Identity"})
        if "Identity" in params:
            return [
                self.data["policies"][
                    self._policy_index(params["Identity"], "Get-CsTeamsMessagingPolicy")
                ]
            ]
        return list(self.data["policies"])

    def new_csteamsmessagingpolicy(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "New-CsTeamsMessagingPolicy"
        identity = _identity(str(params.get("Identity") or ""))
        if any(_key(p["Identity"]) == _key(identity) for p in self.data["policies"]):
            raise Fail(
                "ResourceExists",
                f"A policy with identity '{identity}' already exists.",
                f"PolicyAlreadyExists,{cmdlet}",
            )
        settings = self._settings(cmdlet, params)
        policy = {
            "Identity": identity,
            **self.new_defaults,
            **settings,
            "Key": {
                "ScopeClass": "Tag",
                "SchemaId": {"XName": {"name": POLICY_TYPE}},
                "AuthorityId": {
                    "Class": "Host",
                    "InstanceId": "00000000-0000-0000-0000-000000000000",
                },
                "DefaultXml": None,
                "XmlRoot": {"name": POLICY_TYPE},
            },
            "ConfigMetadata": {"Authority": "Host"},
            "ConfigId": identity,
        }
        self.data["policies"].append(policy)
        return [policy]

    def set_csteamsmessagingpolicy(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Set-CsTeamsMessagingPolicy"
        i = self._policy_index(str(params.get("Identity") or "Global"), cmdlet)
        self.data["policies"][i].update(self._settings(cmdlet, params))
        return []

    def remove_csteamsmessagingpolicy(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Remove-CsTeamsMessagingPolicy"
        self._only(cmdlet, params, {"Identity"})
        i = self._policy_index(str(params.get("Identity")), cmdlet)
        policy = self.data["policies"][i]
        if policy["Identity"] == "Global":
            policy.update({k: v for k, v in self.global_defaults.items() if k != "Identity"})
            return []
        if any(
            _key(g["PolicyName"]) == _key(policy["Identity"])
            for g in self.data["group_assignments"]
        ):
            raise Fail(
                "ResourceBusy",
                f"The policy '{policy['Identity']}' is assigned to one or more groups: remove "
                "those group policy assignments first.",
                f"PolicyInUse,{cmdlet}",
            )
        del self.data["policies"][i]
        return []

    # ------------------------------------------------------------------ group assignments

    def _check_type(self, cmdlet: str, params: dict[str, Any]) -> None:
        if str(params.get("PolicyType", "")).casefold() != POLICY_TYPE.casefold():
            raise Fail(
                "InvalidArgument",
                f"PolicyType {params.get('PolicyType')!r} is not supported by this fake",
                f"InvalidPolicyType,{cmdlet}",
            )

    def _renumber(self, order: list[dict[str, Any]]) -> None:
        for rank, g in enumerate(order, start=1):
            g["Rank"] = rank
        self.data["group_assignments"] = order

    def get_csgrouppolicyassignment(self, params: dict[str, Any]) -> list[Any]:
        self._only("Get-CsGroupPolicyAssignment", params, {"PolicyType", "GroupId"})
        rows = sorted(self.data["group_assignments"], key=lambda g: g["Rank"])
        gid = params.get("GroupId")
        return [
            {
                "GroupId": g["GroupId"],
                "PolicyType": POLICY_TYPE,
                "PolicyName": g["PolicyName"],
                "Rank": g["Rank"],
                "Priority": g["Rank"],
                "CreatedTime": "2024-05-01T08:00:00Z",
                "CreatedBy": "fake",
            }
            for g in rows
            if gid is None or g["GroupId"].casefold() == str(gid).casefold()
        ]

    def new_csgrouppolicyassignment(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "New-CsGroupPolicyAssignment"
        self._only(cmdlet, params, {"GroupId", "PolicyType", "PolicyName", "Rank"})
        self._check_type(cmdlet, params)
        gid = str(params.get("GroupId"))
        group = next((g for g in self.data["groups"] if g["id"].casefold() == gid.casefold()), None)
        if group is None:
            raise not_found(f"Group '{gid}' was not found in the directory.", cmdlet)
        policy = self.data["policies"][self._policy_index(str(params.get("PolicyName")), cmdlet)]
        order = sorted(self.data["group_assignments"], key=lambda g: g["Rank"])
        if any(g["GroupId"].casefold() == gid.casefold() for g in order):
            raise Fail(
                "ResourceExists",
                f"Group '{gid}' already has a policy assignment of type {POLICY_TYPE}: remove "
                "it first.",
                f"GroupAssignmentExists,{cmdlet}",
            )
        rank = params.get("Rank")
        position = len(order) if rank is None else max(0, min(int(rank) - 1, len(order)))
        name = policy["Identity"][4:] if policy["Identity"].startswith("Tag:") else "Global"
        order.insert(
            position,
            {
                "GroupId": group["id"],
                "GroupName": group["displayName"],
                "PolicyName": name,
                "Rank": 0,
            },
        )
        self._renumber(order)
        return []

    def remove_csgrouppolicyassignment(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Remove-CsGroupPolicyAssignment"
        self._only(cmdlet, params, {"GroupId", "PolicyType"})
        self._check_type(cmdlet, params)
        gid = str(params.get("GroupId"))
        order = sorted(self.data["group_assignments"], key=lambda g: g["Rank"])
        kept = [g for g in order if g["GroupId"].casefold() != gid.casefold()]
        if len(kept) == len(order):
            raise not_found(
                f"Group '{gid}' has no policy assignment of type {POLICY_TYPE}.", cmdlet
            )
        self._renumber(kept)
        return []

    # ------------------------------------------------------------------ users

    def _user_object(self, u: dict[str, Any]) -> dict[str, Any]:
        return {
            "Identity": u["id"],
            "UserPrincipalName": u["userPrincipalName"],
            "DisplayName": u.get("displayName"),
            "Department": u.get("department"),
            "Alias": u["userPrincipalName"].split("@")[0],
            "AccountEnabled": True,
            "SipAddress": f"sip:{u['userPrincipalName']}",
            POLICY_TYPE: self.direct.get(u["id"]),
        }

    def _policy_name(self, name: Any, cmdlet: str) -> str | None:
        if name is None or name == "":
            return None
        policy = self.data["policies"][self._policy_index(str(name), cmdlet)]
        return policy["Identity"][4:] if policy["Identity"].startswith("Tag:") else "Global"

    def grant_csteamsmessagingpolicy(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Grant-CsTeamsMessagingPolicy"
        self._only(cmdlet, params, {"Identity", "PolicyName"})
        ref = str(params.get("Identity"))
        user = self.users_by_ref.get(ref.casefold())
        if user is None:
            raise not_found(f"Management object not found for identity '{ref}'.", cmdlet)
        name = self._policy_name(params.get("PolicyName"), cmdlet)
        if name is None:
            self.direct.pop(user["id"], None)
        else:
            self.direct[user["id"]] = name
        return []

    def get_csonlineuser(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Get-CsOnlineUser"
        self._only(cmdlet, params, {"Identity", "Filter"})
        if "Identity" in params:
            ref = str(params["Identity"])
            user = self.users_by_ref.get(ref.casefold())
            if user is None:
                raise not_found(f"Management object not found for identity '{ref}'.", cmdlet)
            return [self._user_object(user)]
        objects = [self._user_object(u) for u in self.data["users"]]
        if "Filter" in params:
            clauses = parse_filter(str(params["Filter"]))
            objects = [o for o in objects if any(_matches(o, c) for c in clauses)]
        return objects

    # ------------------------------------------------------------------ batch operations

    def new_csbatchpolicyassignmentoperation(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "New-CsBatchPolicyAssignmentOperation"
        self._only(cmdlet, params, {"PolicyType", "PolicyName", "Identity", "OperationName"})
        self._check_type(cmdlet, params)
        ids = list(dict.fromkeys(params.get("Identity") or []))
        if not ids or len(ids) > 5000:
            raise Fail(
                "InvalidArgument",
                f"A batch takes 1 to 5,000 users, not {len(ids)}.",
                f"InvalidBatchSize,{cmdlet}",
            )
        name = self._policy_name(params.get("PolicyName"), cmdlet)
        states = []
        for ref in ids:
            user = self.users_by_ref.get(str(ref).casefold())
            if user is None:
                states.append({"Id": ref, "Result": "User not found", "State": "Completed"})
                continue
            if name is None:
                self.direct.pop(user["id"], None)
            else:
                self.direct[user["id"]] = name
            states.append({"Id": ref, "Result": "Success", "State": "Completed"})
        op_id = str(uuid.uuid4())
        self.fake["operations"][op_id] = {
            "OperationId": op_id,
            "OperationName": params.get("OperationName"),
            "CreatedTime": dt.datetime.now(dt.timezone.utc).isoformat(),
            "CreatedBy": "fake",
            "UserState": states,
            "polls": 0,
        }
        return [{"OperationId": op_id}]

    def get_csbatchpolicyassignmentoperation(self, params: dict[str, Any]) -> list[Any]:
        cmdlet = "Get-CsBatchPolicyAssignmentOperation"
        self._only(cmdlet, params, {"Identity", "OperationId"})
        op_id = params.get("Identity") or params.get("OperationId")
        ops = self.fake["operations"]
        if op_id is None:
            return [self._status(op, detail=False) for op in ops.values()]
        if op_id not in ops:
            raise not_found(f"Operation '{op_id}' was not found.", cmdlet)
        op = ops[op_id]
        op["polls"] += 1
        return [self._status(op, detail=True)]

    @staticmethod
    def _status(op: dict[str, Any], *, detail: bool) -> dict[str, Any]:
        done = op["polls"] > 1  # the first poll sees it running
        states = op["UserState"]
        errors = sum(1 for s in states if s["Result"] != "Success")
        out = {
            "OperationId": op["OperationId"],
            "OperationName": op["OperationName"],
            "OverallStatus": "Completed" if done else "InProgress",
            "CreatedTime": op["CreatedTime"],
            "CreatedBy": op["CreatedBy"],
        }
        if detail:
            out.update(
                {
                    "CompletedCount": len(states) if done else 0,
                    "ErrorCount": errors if done else 0,
                    "InProgressCount": 0 if done else len(states),
                    "NotStartedCount": 0,
                    "UserState": states
                    if done
                    else [{"Id": s["Id"], "Result": "", "State": "InProgress"} for s in states],
                }
            )
        return out


# The characters PowerShell's tokenizer reads as a single quote: a single-quoted literal ends at
# any of them, and two in a row are one (the second) character.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_Q = f"[{SINGLE_QUOTES}]"
_CLAUSE = re.compile(
    rf"\s*(\w+)\s+-(eq|ne)\s+({_Q}(?:(?!{_Q}).|{_Q}{_Q})*{_Q}|\"[^\"]*\"|\$null)\s*(?:-or\s+|$)",
    re.IGNORECASE | re.DOTALL,
)


def parse_filter(text: str) -> list[tuple[str, str, str | None]]:
    """``A -eq 'x' -or B -ne $null`` -> clauses; the subset of the filter language the backend
    uses. Anything else is an error record, as a bad filter is for the module."""
    clauses = []
    pos = 0
    while pos < len(text):
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise Fail(
                "InvalidArgument",
                f"Invalid filter syntax at position {pos}: {text!r}",
                "InvalidFilter,Get-CsOnlineUser",
            )
        literal = m.group(3)
        if literal.casefold() == "$null":
            value = None
        elif literal[0] == '"':
            value = literal[1:-1]
        else:
            value = re.sub(f"{_Q}({_Q})", r"\1", literal[1:-1])
        clauses.append((m.group(1), m.group(2).lower(), value))
        pos = m.end()
    return clauses


def _matches(obj: dict[str, Any], clause: tuple[str, str, str | None]) -> bool:
    prop, op, value = clause
    actual = next((v for k, v in obj.items() if k.casefold() == prop.casefold()), None)
    if value is None:
        equal = actual is None
    else:
        equal = isinstance(actual, str) and actual.casefold() == value.casefold()
    return equal if op == "eq" else not equal


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-")[0].split(".") if p.isdigit())


class SoftFail(Fail):
    """A non-terminating error record the module wrote (the cmdlet itself carried on)."""


@dataclass(frozen=True)
class DriverTraits:
    """What the driver text makes pwsh do, where the fake has to choose."""

    stops_on_errors: bool  # the cmdlet call has -ErrorAction Stop
    handled_errors_as_warnings: bool = False  # -ErrorVariable records are answered as warnings
    reads_fail_on_handled_errors: bool = False  # ... except after a Get-*, which then fails
    newline_before_answer: bool = False  # Write-Answer writes an empty line before the marker
    keeps_date_strings: bool = True  # requests are not parsed by a date-guessing ConvertFrom-Json
    # The names (common parameters, aliases) the driver refuses in a request's params, by prefix;
    # empty when the driver splats whatever it is sent.
    reserved_parameters: tuple[str, ...] = ()

    @classmethod
    def of(cls, driver: str) -> DriverTraits:
        code = "\n".join(line.split("#", 1)[0] for line in driver.splitlines())
        # The cmdlet invocation may continue on the next line (backtick).
        call = re.search(r"&\s*\$cmdlet\s+@params((?:[^\n]*`\n)*[^\n]*)", code)
        args = call.group(1) if call else ""
        return cls(
            stops_on_errors=bool(re.search(r"-ErrorAction\s+'?Stop", args)),
            handled_errors_as_warnings=bool(
                (m := re.search(r"-ErrorVariable\s+(\w+)", args))
                and re.search(rf"\$notes\s*\+=\s*@\(\${m.group(1)}\b", code)
            ),
            reads_fail_on_handled_errors=bool(
                (m := re.search(r"-ErrorVariable\s+(\w+)", args))
                and re.search(
                    rf"\${m.group(1)}\.Count\s+-gt\s+0\s+-and\s+\$cmdlet\s+-like\s+'Get-\*'",
                    code,
                )
            ),
            # ConvertFrom-Json (PowerShell 6+) turns ISO-8601 strings into DateTime unless told
            # -DateKind String, which this fake's PowerShell (7.4) does not have.
            keeps_date_strings=re.search(r"\bConvertFrom-Json\b", code) is None,
            reserved_parameters=_reserved_words(code),
            newline_before_answer=bool(
                re.search(r"WriteLine\(\)\s*\n\s*\[Console\]::Out\.WriteLine\(\"<<<", code)
                or re.search(r"WriteLine\(\"`n<<<", code)
            ),
        )


def _reserved_words(code: str) -> tuple[str, ...]:
    """The driver's ``$reserved`` list, when the driver checks request keys against it."""
    listed = re.search(r"\$reserved\s*=\s*@\(([^)]*)\)", code)
    checks = r"\$params\.Keys\s*\|\s*Where-Object\s*\{\s*Find-ReservedParameter\s+\$_"
    by_prefix = r"\.StartsWith\(\$Name,\s*\[System\.StringComparison\]::OrdinalIgnoreCase"
    guarded = re.search(checks, code) and re.search(by_prefix, code)
    if not listed or not guarded:
        return ()
    return tuple(re.findall(r"'([A-Za-z]+)'", listed.group(1)))


def _prefix_of(name: str, words: Any) -> str | None:
    """The first of ``words`` that ``name`` is a case-insensitive prefix of."""
    return next((w for w in words if w.casefold().startswith(name.casefold())), None)


def bind_common_parameters(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split splatted ``params`` as PowerShell binds them: (the cmdlet's own, the common
    parameters by full name). A key that is a common parameter, its alias, or a prefix of either
    binds to the common parameter."""
    words = [*catalogue.COMMON_PARAMETERS, *catalogue.COMMON_PARAMETERS.values()]
    full = {n: n for n in catalogue.COMMON_PARAMETERS}
    full.update({a: n for n, a in catalogue.COMMON_PARAMETERS.items()})
    own, common = {}, {}
    for key, value in params.items():
        word = _prefix_of(key, words)
        if word is None:
            own[key] = value
        else:
            common[full[word]] = value
    return own, common


_ISO_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$"
)


def as_datetime_parameter(value: Any) -> Any:
    """What a string parameter receives after ConvertFrom-Json made a DateTime of it: the
    invariant culture's rendering (``05/01/2024 08:00:00``); lists and tables recursively."""
    if isinstance(value, str):
        m = _ISO_DATE.match(value)
        if m is None:
            return value
        year, month, day, hour, minute, second = (m.group(i) for i in range(1, 7))
        return f"{month}/{day}/{year} {hour}:{minute}:{second}"
    if isinstance(value, list):
        return [as_datetime_parameter(v) for v in value]
    if isinstance(value, dict):
        return {k: as_datetime_parameter(v) for k, v in value.items()}
    return value


def _driver_text(line: str) -> str | None:
    m = re.search(r"FromBase64String\('([A-Za-z0-9+/=]+)'\)", line)
    if not m:
        return None
    text = base64.b64decode(m.group(1)).decode("utf-8")
    return text if "teams-bridge PowerShell driver" in text else None


def main() -> int:
    tenant = Tenant(os.environ["FAKE_PWSH_STATE"])
    tenant.fake["spawns"].append({"argv": sys.argv[1:], "pid": os.getpid()})
    tenant.save()
    driver = _driver_text(sys.stdin.readline())
    if driver is None:
        sys.stderr.write("fake pwsh: the first line on stdin was not the teams-bridge driver\n")
        return 64
    traits = DriverTraits.of(driver)
    version = os.environ.get("FAKE_PWSH_MODULE_VERSION", "7.9.0")
    write(
        {
            "id": "hello",
            "ok": True,
            "result": {
                "protocol": 1,
                "PSVersion": os.environ.get("FAKE_PWSH_PS_VERSION", "7.4.6"),
                "MicrosoftTeams": [] if version in ("", "none") else [version],
            },
        }
    )
    print("WARNING: this line is host output outside any answer", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        cmdlet, params = request["cmdlet"], copy.deepcopy(request.get("params") or {})
        if not traits.keeps_date_strings:
            params = as_datetime_parameter(params)
        tenant.fake["calls"].append({"cmdlet": cmdlet, "params": sorted(params)})
        tenant.save()
        if cmdlet == os.environ.get("FAKE_PWSH_HANG_ON"):
            time.sleep(3600)
        if cmdlet == os.environ.get("FAKE_PWSH_PARTIAL_ON"):
            # Host output that ends without a newline, just before the answer.
            sys.stdout.write("WARNING: the module printed this without a newline")
            sys.stdout.flush()
        if cmdlet == os.environ.get("FAKE_PWSH_CRASH_ON"):
            sys.stderr.write(f"Unhandled exception while running {cmdlet}: process is exiting\n")
            sys.stderr.flush()
            return 134
        answer: dict[str, Any] = {"id": request["id"]}
        refused = next((k for k in params if _prefix_of(k, traits.reserved_parameters)), None)
        if refused is not None:
            word = _prefix_of(refused, traits.reserved_parameters)
            answer.update(
                ok=False,
                error={
                    "category": "InvalidArgument",
                    "message": f"teams-bridge driver: parameter '{refused}' is refused: PowerShell "
                    f"would bind it as the common parameter -{word}, which changes the call "
                    "itself; no setting has this name",
                    "fqid": "ReservedParameter,teams-bridge-driver",
                },
            )
            write(answer, traits)
            continue
        params, common = bind_common_parameters(params)
        try:
            if common.get("WhatIf") and cmdlet in MODULE_CMDLETS and not cmdlet.startswith("Get-"):
                # -WhatIf: the cmdlet says what it would do, does nothing and outputs nothing.
                sys.stdout.write(f'What if: Performing the operation "{cmdlet}"\n')
                answer.update(ok=True, result=[], warnings=[])
                write(answer, traits)
                continue
            result = tenant.run(cmdlet, params)
            dropped = os.environ.get("FAKE_PWSH_DROP_FIELD", "").partition(":")
            if dropped[0] == cmdlet:
                result = [{k: v for k, v in o.items() if k != dropped[2]} for o in result]
            select = request.get("select")
            if select:
                result = [{k: o.get(k) for k in select} for o in result]
            handled = tenant.handled_errors
            tenant.handled_errors = []
            if handled and cmdlet.startswith("Get-") and traits.reads_fail_on_handled_errors:
                raise Fail(
                    "NotSpecified", handled[0], f"HttpRequestFailed,{cmdlet.replace('-', '')}"
                )
            warnings = (
                [f"error handled inside {cmdlet}: {m}" for m in handled]
                if traits.handled_errors_as_warnings
                else []
            )
            answer.update(ok=True, result=result, warnings=warnings)
        except SoftFail as exc:
            if traits.stops_on_errors:
                answer.update(ok=False, error=exc.record)
            else:
                # pwsh prints the record on stderr; the pipeline's output is what it was.
                sys.stderr.write(f"{cmdlet}: {exc.record['message']}\n")
                sys.stderr.flush()
                answer.update(ok=True, result=[], warnings=[])
        except Fail as exc:
            answer.update(ok=False, error=exc.record)
        tenant.save()
        write(answer, traits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
