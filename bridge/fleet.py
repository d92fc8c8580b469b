"""Many tenants: the fleet file, shards, and one run over every tenant (``fleet``).

The fleet file (``DESIGN.md``, "Fleets") lists tenants, each with its app registration, a
credential *by reference* (an environment variable holding the secret, a certificate file or a
federated token file: never the secret itself), its desired-state file (relative to the fleet
file) and its mode. ``load_fleet`` validates it as ``desired.load_desired`` does a desired file:
every problem with ``file:line:column`` and "did you mean".

Isolation: each tenant gets its own ``Settings`` (built from the fleet entry, never by changing
the process environment, which every thread shares), so its own token provider and cache, HTTP
client and pacer, journal, history and report directory. A tenant's failure is caught at its own
boundary and becomes its row in the fleet report; the others go on.

Shards: rendezvous (highest random weight) hashing of the tenant's name, so every tenant has
exactly one shard and going from N to N+1 shards moves about 1/(N+1) of them (those the new
shard wins), nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import limits
from .errors import BridgeError, ConfigError, Location, Problem
from .yamlloc import LocList, LocMap, Pos, described, load

log = logging.getLogger(__name__)

TOP_KEYS = ("defaults", "tenants")
DEFAULT_KEYS = ("interval", "mode", "cloud")
TENANT_KEYS = ("name", "tenant", "client_id", "credential", "desired", "mode", "interval", "cloud")
CREDENTIAL_KINDS = ("secret_env", "certificate", "federated_token_file")
CREDENTIAL_KEYS = (*CREDENTIAL_KINDS, "certificate_password_env")
MODES = ("drift", "apply")
CLOUD_NAMES = ("commercial", "gcc", "gcchigh", "dod")
# Keys that would put a secret in the file: refused with the way to do it instead.
SECRET_KEYS = ("secret", "client_secret", "password", "certificate_password", "token")
# A name is a label in metrics and a directory name: keep it to what both take everywhere.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FLEET_MAX_BYTES = 16 << 20
SHARDS_ENV = "BRIDGE_SHARDS"
SHARD_ENV = "BRIDGE_SHARD"
STATES = ("in_sync", "drift", "applied", "refused", "error")
# Exit code of a whole fleet run: the worst tenant's (an error outranks drift).
_RANK = {0: 0, 2: 1, 1: 2}


class FleetFileError(ConfigError):
    """The fleet file is invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: p.location)
        lines = [str(p) for p in self.problems]
        super().__init__("\n".join(lines) + f"\n{len(self.problems)} error(s) in the fleet file")


@dataclass(frozen=True)
class Credential:
    kind: str  # "secret_env" | "certificate" | "federated_token_file"
    ref: str  # the variable's name, or the file's path (resolved against the fleet file)
    password_env: str | None = None  # a certificate's password, by variable name


@dataclass(frozen=True)
class FleetTenant:
    name: str
    tenant: str
    client_id: str
    credential: Credential
    desired: str  # resolved path
    mode: str = "drift"
    interval: float = 900.0
    cloud: str | None = None
    location: Location = field(default_factory=lambda: Location("<fleet>"))


@dataclass(frozen=True)
class Fleet:
    source: str
    tenants: tuple[FleetTenant, ...]

    def names(self) -> list[str]:
        return [t.name for t in self.tenants]

    def shard(self, index: int, count: int) -> Fleet:
        """The tenants of shard ``index`` (0-based) of ``count``."""
        picked = tuple(t for t in self.tenants if shard_of(t.name, count) == index)
        return Fleet(self.source, picked)


# --------------------------------------------------------------------------- loading


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class _Checker:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def error(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(Location(self.source, *pos), message))

    def mapping(self, value: Any, pos: Pos, what: str) -> LocMap | None:
        if not isinstance(value, LocMap):
            self.error(pos, f"{what} must be a mapping, not {described(value)}")
            return None
        return value

    def only_keys(self, m: LocMap, allowed: Sequence[str], where: str) -> None:
        for key in m:
            if key in allowed:
                continue
            pos = m.key_pos[key]
            if str(key).casefold() in SECRET_KEYS:
                self.error(
                    pos,
                    f"{key!r} in {where}: secrets are never written in the fleet file; put the "
                    "secret in an environment variable and name it under credential: as "
                    "secret_env: VARIABLE (or use certificate: or federated_token_file:)",
                )
                continue
            self.error(
                pos,
                f"unknown key {key!r} in {where}{_did_you_mean(str(key), allowed)}; allowed: "
                f"{', '.join(allowed)}",
            )

    def text(self, m: LocMap, key: str, where: str, required: bool = True) -> str | None:
        if key not in m:
            if required:
                self.error(m.pos, f"{where} has no {key}: add '{key}:'")
            return None
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            self.error(m.value_pos[key], f"{key} must be a non-empty text, not {described(value)}")
            return None
        return value.strip()

    def choice(self, m: LocMap, key: str, choices: Sequence[str]) -> str | None:
        value = self.text(m, key, key, required=False)
        if value is not None and value not in choices:
            self.error(
                m.value_pos[key],
                f"{key} {value!r} is not one of {', '.join(choices)}"
                f"{_did_you_mean(value, choices)}",
            )
            return None
        return value

    def duration(self, m: LocMap, key: str) -> float | None:
        from .service.loop import parse_duration

        if key not in m:
            return None
        try:
            return parse_duration(str(m[key]), option="interval")
        except ConfigError as exc:
            self.error(m.value_pos[key], str(exc))
            return None


def load_fleet(path: str | os.PathLike[str]) -> Fleet:
    """Read and validate the fleet file; ``FleetFileError`` lists every problem."""
    p = Path(path)
    try:
        raw = limits.read_bounded(p, FLEET_MAX_BYTES)
    except OSError as exc:
        raise FleetFileError(
            [Problem(Location(str(p)), f"cannot read the fleet file: {exc.strerror or exc}")]
        ) from None
    return parse_fleet(raw, str(p), base_dir=p.parent)


def parse_fleet(raw: bytes | str, source: str = "<fleet>", base_dir: Path | None = None) -> Fleet:
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FleetFileError(
                [Problem(Location(source), f"not UTF-8 text (byte {exc.start}): save it as UTF-8")]
            ) from None
    try:
        doc, yaml_problems = load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise FleetFileError(
            [Problem(Location(source, line, col), f"not valid YAML: {exc.problem or exc}")]
        ) from None
    except yaml.YAMLError as exc:
        raise FleetFileError([Problem(Location(source), f"not valid YAML: {exc}")]) from None
    c = _Checker(source)
    for yp in yaml_problems:
        c.error(yp.pos, yp.message)
    base = base_dir if base_dir is not None else Path(".")
    tenants: list[FleetTenant] = []
    top = c.mapping(doc, (1, 1), "the fleet file") if doc is not None else None
    if doc is None:
        c.error((1, 1), "the fleet file is empty: list the tenants under 'tenants:'")
    if top is not None:
        c.only_keys(top, TOP_KEYS, "the fleet file")
        defaults = {"mode": "drift", "interval": 900.0, "cloud": None}
        if "defaults" in top:
            d = c.mapping(top["defaults"], top.value_pos["defaults"], "defaults")
            if d is not None:
                c.only_keys(d, DEFAULT_KEYS, "defaults")
                defaults["mode"] = c.choice(d, "mode", MODES) or defaults["mode"]
                defaults["interval"] = c.duration(d, "interval") or defaults["interval"]
                defaults["cloud"] = c.choice(d, "cloud", CLOUD_NAMES)
        entries = top.get("tenants")
        if "tenants" not in top:
            c.error(top.pos, "the fleet file has no 'tenants:' list")
        elif not isinstance(entries, LocList) or not entries:
            c.error(top.value_pos["tenants"], "tenants must be a non-empty list")
        else:
            seen: dict[str, Pos] = {}
            for item, pos in zip(entries, entries.item_pos, strict=True):
                t = _tenant(c, item, pos, defaults, base, seen)
                if t is not None:
                    tenants.append(t)
            _one_entry_per_tenant(c, tenants)
    if c.problems:
        raise FleetFileError(c.problems)
    return Fleet(source, tuple(tenants))


def _one_entry_per_tenant(c: _Checker, tenants: list[FleetTenant]) -> None:
    """Two entries for one tenant would read it twice and could apply to it at once (the lock
    is per machine): one entry per tenant (compared as written, case-insensitive)."""
    first: dict[str, FleetTenant] = {}
    for t in tenants:
        key = t.tenant.casefold()
        if key in first:
            other = first[key]
            c.error(
                (t.location.line, t.location.column),
                f"tenant {t.tenant!r} is already listed as {other.name!r} at line "
                f"{other.location.line}: one entry per tenant",
            )
        else:
            first[key] = t


def _tenant(
    c: _Checker,
    item: Any,
    pos: Pos,
    defaults: Mapping[str, Any],
    base: Path,
    seen: dict[str, Pos],
) -> FleetTenant | None:
    m = c.mapping(item, pos, "a tenant entry")
    if m is None:
        return None
    before = len(c.problems)
    c.only_keys(m, TENANT_KEYS, "a tenant entry")
    name = c.text(m, "name", "a tenant entry")
    where = f"tenant {name!r}" if name else "a tenant entry"
    if name is not None:
        if not NAME_RE.fullmatch(name):
            c.error(
                m.value_pos["name"],
                f"name {name!r}: use letters, digits, '.', '_' and '-' (at most 63, starting with "
                "a letter or digit): it names the tenant's report directory and metric label",
            )
        elif name.casefold() in seen:
            line, col = seen[name.casefold()]
            c.error(
                m.value_pos["name"],
                f"name {name!r} is already used at line {line}, column {col}: names must be "
                "unique (case-insensitive)",
            )
        else:
            seen[name.casefold()] = m.value_pos["name"]
    tenant = c.text(m, "tenant", where)
    client_id = c.text(m, "client_id", where)
    desired = c.text(m, "desired", where)
    credential = _credential(c, m, where, base)
    mode = c.choice(m, "mode", MODES) or defaults["mode"]
    interval = c.duration(m, "interval") or defaults["interval"]
    cloud = c.choice(m, "cloud", CLOUD_NAMES) or defaults["cloud"]
    if len(c.problems) > before:
        return None
    assert name and tenant and client_id and desired and credential
    return FleetTenant(
        name=name,
        tenant=tenant,
        client_id=client_id,
        credential=credential,
        desired=str(base / desired),
        mode=mode,
        interval=interval,
        cloud=cloud,
        location=Location(c.source, *m.pos),
    )


def _credential(c: _Checker, m: LocMap, where: str, base: Path) -> Credential | None:
    if "credential" not in m:
        c.error(
            m.pos,
            f"{where} has no credential: add 'credential:' with one of "
            f"{', '.join(CREDENTIAL_KINDS)}",
        )
        return None
    cred = c.mapping(m["credential"], m.value_pos["credential"], f"the credential of {where}")
    if cred is None:
        return None
    c.only_keys(cred, CREDENTIAL_KEYS, f"the credential of {where}")
    given = [k for k in CREDENTIAL_KINDS if k in cred]
    if len(given) != 1:
        c.error(
            cred.pos,
            f"the credential of {where} names {len(given)} of {', '.join(CREDENTIAL_KINDS)}: give "
            "exactly one",
        )
        return None
    kind = given[0]
    value = c.text(cred, kind, kind)
    if value is None:
        return None
    password = c.text(cred, "certificate_password_env", "", required=False)
    for key, var in ((kind, value if kind == "secret_env" else None), ("password", password)):
        if var is not None and not ENV_NAME_RE.fullmatch(var):
            # Not a variable name: perhaps the secret itself. Never echoed.
            at = cred.value_pos["secret_env" if key == "secret_env" else "certificate_password_env"]
            c.error(
                at,
                "this is not an environment variable name (letters, digits and '_'); if it is "
                "the secret itself, remove it from the file, put it in an environment variable "
                "and write that variable's name here",
            )
            return None
    if password is not None and kind != "certificate":
        c.error(
            cred.value_pos["certificate_password_env"],
            "certificate_password_env goes with certificate: only",
        )
        return None
    if kind != "secret_env":
        value = str(base / value)
    return Credential(kind, value, password)


# --------------------------------------------------------------------------- shards


def _weight(name: str, shard: int) -> int:
    digest = hashlib.sha256(f"{shard}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(name: str, count: int) -> int:
    """The shard (0-based) of ``count`` that owns tenant ``name``: the highest weight wins."""
    if count <= 1:
        return 0
    return max(range(count), key=lambda i: _weight(name, i))


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(0, 1)  # every tenant


def parse_shard(text: str, option: str = "--shard") -> Shard:
    """``I/N`` (``0 <= I < N``) -> ``Shard``; ``ConfigError`` naming ``option`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)) <= 10_000:
        raise ConfigError(
            f"{option} {text!r}: give I/N, the shard index from 0 and the number of shards, "
            "e.g. 0/3"
        )
    return Shard(int(m.group(1)), int(m.group(2)))


def default_shard(environ: Mapping[str, str] | None = None, hostname: str | None = None) -> Shard:
    """The shard from the environment: ``BRIDGE_SHARD=I/N``; or ``BRIDGE_SHARDS=N`` with the
    index from Kubernetes (an Indexed Job's ``JOB_COMPLETION_INDEX``, else the StatefulSet
    ordinal at the end of the host name, ``teams-bridge-fleet-2``). Neither set: one shard."""
    env = os.environ if environ is None else environ
    if env.get(SHARD_ENV, "").strip():
        return parse_shard(env[SHARD_ENV], SHARD_ENV)
    count_text = env.get(SHARDS_ENV, "").strip()
    if not count_text:
        return WHOLE
    if not count_text.isdigit() or not 1 <= int(count_text) <= 10_000:
        raise ConfigError(f"{SHARDS_ENV}={count_text!r}: give the number of shards, e.g. 3")
    count = int(count_text)
    index_text = env.get("JOB_COMPLETION_INDEX", "").strip()
    where = "JOB_COMPLETION_INDEX"
    if not index_text:
        host = hostname if hostname is not None else socket.gethostname()
        m = re.search(r"-(\d+)$", host.split(".")[0])
        if not m:
            raise ConfigError(
                f"{SHARDS_ENV}={count} but this shard's index is unknown: no "
                f"JOB_COMPLETION_INDEX and the host name {host!r} does not end in a "
                "StatefulSet ordinal (-0, -1, ...); give --shard I/N"
            )
        index_text, where = m.group(1), f"the host name {host!r}"
    index = int(index_text)
    if index >= count:
        raise ConfigError(
            f"shard index {index} (from {where}) is not below {SHARDS_ENV}={count}: set "
            f"{SHARDS_ENV} to the number of replicas or completions"
        )
    return Shard(index, count)


# --------------------------------------------------------------------------- one tenant's settings


def tenant_settings(
    entry: FleetTenant,
    *,
    environ: Mapping[str, str] | None = None,
    token_cache: str | None = None,
    cloud: str | None = None,
) -> Any:
    """The tenant's ``Settings``: endpoints and tuning from the environment (as for one tenant),
    identity and credential from the fleet entry only (the process environment is read, never
    changed). ``ConfigError`` naming the tenant and the variable when the secret is missing."""
    from .settings import Settings

    env = os.environ if environ is None else environ
    cred = entry.credential
    overrides: dict[str, Any] = {
        "tenant_id": entry.tenant,
        "client_id": entry.client_id,
        "cloud": entry.cloud or cloud,
    }
    if cred.kind == "secret_env":
        secret = env.get(cred.ref, "")
        if not secret:
            raise ConfigError(
                f"tenant {entry.name}: the variable {cred.ref} (its credential's secret_env) is "
                "not set or empty: set it to the app's client secret"
            )
        overrides.update(auth="secret", client_secret=secret)
    elif cred.kind == "certificate":
        overrides.update(auth="certificate", client_certificate_path=cred.ref)
        if cred.password_env:
            password = env.get(cred.password_env, "")
            if not password:
                raise ConfigError(
                    f"tenant {entry.name}: the variable {cred.password_env} (its "
                    "certificate_password_env) is not set or empty"
                )
            overrides["client_certificate_password"] = password
    else:
        overrides.update(auth="federated", federated_token_file=cred.ref)
    try:
        settings = Settings.load(env_file=None, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"tenant {entry.name}: {exc}") from None
    # Another tenant's credential or cache from the environment is never this tenant's.
    if cred.kind != "secret_env":
        settings.client_secret = None
    if cred.kind != "certificate":
        settings.client_certificate_path = None
        settings.client_certificate_password = None
    if cred.kind != "federated_token_file":
        settings.federated_token_file = None
    settings.token_cache = token_cache
    return settings


# --------------------------------------------------------------------------- the run


@dataclass
class TenantRow:
    """One tenant's line in the fleet report."""

    name: str
    mode: str
    state: str = "error"  # STATES
    exit_code: int = 1
    drift: dict[str, int] = field(default_factory=dict)  # kind -> objects
    findings: dict[str, int] = field(default_factory=dict)  # severity -> n
    changes: int = 0  # what apply would (still) change
    message: str | None = None
    seconds: float = 0.0
    last_success: str | None = None  # ISO time
    report: str | None = None  # the tenant's HTML report, relative to the fleet report
    requests: int = 0
    throttled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "state": self.state,
            "exit_code": self.exit_code,
            "drift": self.drift,
            "findings": self.findings,
            "changes": self.changes,
            "message": self.message,
            "seconds": round(self.seconds, 3),
            "last_success": self.last_success,
            "report": self.report,
            "requests": self.requests,
            "throttled": self.throttled,
        }


@dataclass
class FleetResult:
    action: str
    shard: Shard
    rows: list[TenantRow]
    started: str
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = [r.exit_code for r in self.rows] or [0]
        return max(codes, key=lambda code: _RANK.get(code, 2))

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for r in self.rows if r.state == s) for s in STATES}
        return {
            "action": self.action,
            "shard": str(self.shard),
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "tenants": len(self.rows),
            "states": counts,
            "rows": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class FleetOptions:
    action: str  # drift | plan | apply
    report_dir: str = "fleet-reports"
    state_dir: str = "fleet-state"
    concurrency: int = 4
    transport: str = "rest"
    cloud: str | None = None
    fail_on: tuple[str, ...] = ("error",)
    formats: tuple[str, ...] = ("json", "html", "md")


def _drift_counts(report: Any) -> dict[str, int]:
    from .service.loop import drift_objects

    return drift_objects(report)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class FleetRunner:
    """Runs one action over every tenant of a fleet, ``concurrency`` at a time. ``session_for``
    builds a tenant's ``Session`` (tests hand in their own)."""

    def __init__(
        self,
        fleet: Fleet,
        options: FleetOptions,
        *,
        session_for: Callable[[FleetTenant], Any] | None = None,
        on_done: Callable[[TenantRow], None] | None = None,
    ):
        if options.action not in ("drift", "plan", "apply"):
            raise ConfigError(f"fleet action {options.action!r}: choose drift, plan or apply")
        try:
            limits.check(options.concurrency, limits.CONCURRENCY, "--concurrency")
        except limits.NumberError as exc:
            raise ConfigError(str(exc)) from None
        self.fleet = fleet
        self.options = options
        self._session_for = session_for or self.build_session
        self._on_done = on_done
        self._lock = threading.Lock()

    def tenant_dir(self, entry: FleetTenant) -> Path:
        return Path(self.options.state_dir) / entry.name

    def build_session(self, entry: FleetTenant) -> Any:
        from .session import Session, SessionOptions

        state = self.tenant_dir(entry)
        state.mkdir(parents=True, exist_ok=True)
        settings = tenant_settings(
            entry,
            token_cache=str(state / "token-cache.json"),
            cloud=self.options.cloud,
        )
        options = SessionOptions(transport=self.options.transport, cloud=entry.cloud)
        return Session(options, settings=settings)

    def run(self, shard: Shard = WHOLE) -> FleetResult:
        started, t0 = _now(), time.monotonic()
        entries = list(self.fleet.tenants)
        workers = max(1, min(self.options.concurrency, len(entries)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet") as pool:
            rows = list(pool.map(self.run_tenant, entries))
        result = FleetResult(self.options.action, shard, rows, started, time.monotonic() - t0)
        result.written = write_fleet_report(result, Path(self.options.report_dir))
        return result

    def run_tenant(self, entry: FleetTenant) -> TenantRow:
        """One tenant, start to end; every failure is this tenant's row, never the fleet's."""
        row = TenantRow(entry.name, entry.mode)
        t0 = time.monotonic()
        session = None
        try:
            session = self._session_for(entry)
            self._act(entry, session, row)
        except BridgeError as exc:
            message = in_fleet_terms(entry, _redacted(session, str(exc)))
            row.state, row.exit_code, row.message = "error", 1, message
            log.warning("tenant %s: %s", entry.name, row.message)
        except Exception as exc:  # a bug: this tenant fails, the fleet goes on
            log.error("tenant %s failed unexpectedly", entry.name, exc_info=True)
            row.state, row.exit_code = "error", 1
            row.message = _redacted(session, f"unexpected {type(exc).__name__}: {exc}")
        finally:
            if session is not None:
                stats = session.request_stats()
                row.requests = int(stats.get("total", 0))
                row.throttled = int(stats.get("throttled", 0))
                try:
                    session.close()
                except Exception:  # closing must not turn a result into a failure
                    log.debug("tenant %s: close failed", entry.name, exc_info=True)
        row.seconds = time.monotonic() - t0
        row.last_success = self._last_success(entry, row)
        if self._on_done is not None:
            self._on_done(row)
        return row

    def _act(self, entry: FleetTenant, session: Any, row: TenantRow) -> None:
        from .commands import DriftRequest, make_plan, run_drift

        action = self.options.action
        state = self.tenant_dir(entry)
        if action == "plan":
            plan = make_plan(session, entry.desired)
            row.changes = len(plan.plan.changes)
            row.state = "drift" if plan.plan.changes else "in_sync"
            row.exit_code = 2 if plan.plan.changes else 0
            if plan.needs_force:
                row.message = "apply would refuse: " + "; ".join(plan.needs_force)
            return
        if action == "apply" and entry.mode == "apply":
            self._apply(entry, session, row)
            if row.state in ("refused", "error"):
                return
        report_dir = Path(self.options.report_dir) / entry.name
        outcome = run_drift(
            session,
            DriftRequest(
                desired_file=entry.desired,
                report_dir=str(report_dir),
                formats=self.options.formats,
                history_file=str(state / "history.sqlite"),
                fail_on=self.options.fail_on,
            ),
        )
        report = outcome.report
        row.drift = _drift_counts(report)
        row.findings = dict(report.summary()["findings"])
        row.changes = outcome.changes
        row.exit_code = outcome.exit_code
        if row.state != "applied":
            row.state = "in_sync" if report.in_sync else "drift"
        if "html" in self.options.formats:
            from .report.render import FILE_NAMES

            row.report = f"{entry.name}/{FILE_NAMES['html']}"

    def _apply(self, entry: FleetTenant, session: Any, row: TenantRow) -> None:
        from .commands import ApplyRequest, run_apply
        from .errors import UnsafePlanError

        request = ApplyRequest(
            desired_file=entry.desired,
            plan_file=None,
            force=False,  # a fleet never forces: a plan over a tenant's limits waits for a person
            journal_path=str(self.tenant_dir(entry) / "journal.jsonl"),
            # The state directory, not the home directory (read-only in a pod): one lock per
            # tenant id in it, on this machine only.
            lock_dir=self.options.state_dir,
        )
        try:
            outcome = run_apply(session, request, confirm=lambda plan, tenant: True)
        except UnsafePlanError as exc:
            row.state, row.exit_code, row.message = "refused", 1, str(exc)
            return
        applied = outcome.result is not None
        row.state = "applied" if applied else "in_sync"
        if applied:
            row.message = "; ".join(outcome.lines[:3])

    def _last_success(self, entry: FleetTenant, row: TenantRow) -> str | None:
        """When the tenant was last read successfully: now, or what the last success recorded."""
        mark = self.tenant_dir(entry) / "last-success"
        if row.state != "error":
            now = _now()
            try:
                mark.parent.mkdir(parents=True, exist_ok=True)
                mark.write_text(now + "\n", encoding="utf-8")
            except OSError as exc:
                log.warning("tenant %s: cannot record the last success: %s", entry.name, exc)
            return now
        try:
            return mark.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None


def in_fleet_terms(entry: FleetTenant, text: str) -> str:
    """A message that names the one-tenant variables, pointed at where the fleet file says."""
    where = {
        "AZURE_TENANT_ID": f"tenant: of {entry.name} in the fleet file",
        "AZURE_CLIENT_ID": f"client_id: of {entry.name} in the fleet file",
        "AZURE_CLIENT_CERTIFICATE_PATH": f"certificate: of {entry.name} in the fleet file",
        "AZURE_FEDERATED_TOKEN_FILE": f"federated_token_file: of {entry.name} in the fleet file",
        "AZURE_CLIENT_SECRET": f"the variable {entry.credential.ref}",
    }
    for variable, fleet_words in where.items():
        text = text.replace(f"check {variable}", f"check {fleet_words}")
    return text


def _redacted(session: Any, text: str) -> str:
    from .redact import redact

    settings = getattr(session, "settings", None)
    if settings is not None:
        return str(settings.redact(text))
    return redact(text)


# --------------------------------------------------------------------------- the fleet report

FLEET_FILE_NAMES = {
    "json": "fleet-report.json",
    "html": "fleet-report.html",
    "md": "fleet-report.md",
}


def render_fleet_json(result: FleetResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _drift_text(row: TenantRow) -> str:
    if not row.drift:
        return "-"
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.drift.items() if v) or "0"


def _findings_text(row: TenantRow) -> str:
    shown = [f"{n} {s}" for s, n in row.findings.items() if n]
    return ", ".join(shown) or ("-" if not row.findings else "0")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_fleet_markdown(result: FleetResult) -> str:
    d = result.to_dict()
    states = ", ".join(f"{n} {s}" for s, n in d["states"].items() if n) or "none"
    lines = [
        f"# Fleet {result.action}: {len(result.rows)} tenant(s), shard {result.shard}",
        "",
        f"Started {result.started}, {result.seconds:.1f} s; {states}; exit {result.exit_code}.",
        "",
        "| Tenant | Mode | State | Drift | Findings | Changes | Last success | Report | Note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        link = f"[report]({r.report})" if r.report else "-"
        lines.append(
            f"| {_md(r.name)} | {r.mode} | {r.state} | {_drift_text(r)} | {_findings_text(r)} | "
            f"{r.changes} | {r.last_success or '-'} | {link} | {_md(r.message or '')} |"
        )
    return "\n".join(lines) + "\n"


def render_fleet_html(result: FleetResult) -> str:
    e = html.escape
    rows = []
    for r in result.rows:
        link = f'<a href="{e(r.report)}">report</a>' if r.report else "-"
        rows.append(
            f'<tr class="{e(r.state)}"><td>{e(r.name)}</td><td>{e(r.mode)}</td>'
            f"<td>{e(r.state)}</td><td>{e(_drift_text(r))}</td><td>{e(_findings_text(r))}</td>"
            f"<td>{r.changes}</td><td>{e(r.last_success or '-')}</td><td>{link}</td>"
            f"<td>{e(r.message or '')}</td></tr>"
        )
    title = f"Fleet {e(result.action)}: {len(result.rows)} tenant(s), shard {result.shard}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "tr.error td{background:#fdd}tr.drift td,tr.refused td{background:#ffd}"
        "tr.in_sync td,tr.applied td{background:#dfd}"
        f"</style></head><body><h1>{title}</h1>"
        f"<p>Started {e(result.started)}, {result.seconds:.1f} s, exit {result.exit_code}.</p>"
        "<table><tr><th>Tenant</th><th>Mode</th><th>State</th><th>Drift</th><th>Findings</th>"
        "<th>Changes</th><th>Last success</th><th>Report</th><th>Note</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


FLEET_RENDERERS: dict[str, Callable[[FleetResult], str]] = {
    "json": render_fleet_json,
    "html": render_fleet_html,
    "md": render_fleet_markdown,
}


def write_fleet_report(result: FleetResult, directory: Path) -> list[Path]:
    from .files import write_set_atomic

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the fleet report to {directory}: {exc.strerror or exc}; choose a "
            "writable --report-dir"
        ) from None
    files = [
        (directory / FLEET_FILE_NAMES[fmt], render(result).encode("utf-8", "backslashreplace"))
        for fmt, render in FLEET_RENDERERS.items()
    ]
    write_set_atomic(files, hint="choose a writable --report-dir")
    return [path for path, _ in files]
