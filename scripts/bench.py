#!/usr/bin/env python3
"""Scale benchmark: `drift` and `apply` through the real CLI against the sandbox, with the
services' latency and throttling.

For each tenant size the sandbox is seeded (50 policies, 60 group assignments, 5% of users with a
direct assignment), a desired file managing all of it with a little drift is written, and
`python -m bridge drift FILE` runs as a child process: wall time (start-up included), HTTP
requests by route as the sandbox counted them, 429s, and the child's peak RSS. Then, on one
tenant, `apply --auto-approve --force` of N new direct assignments: wall time, write requests by
route, and the reads around them (the plan, read under the lock, and verification polls).

Requests are compared with the fewest the APIs allow for a full read (see ``minimum_requests``)
and with a per-user reader (one request per user plus one per group, as peer tools do). Wall time
is compared with the network floor (see ``floor_seconds``): what no client can beat at the
configured latency and rate.

    python scripts/bench.py                         # 1k, 10k, 100k users; apply 10k on 100k
    python scripts/bench.py --sizes 200 --apply-users 100 --latency 0 --throttle-rps 0
    python scripts/bench.py --json bench.json --repeat 3
    python scripts/bench.py --sizes 1000000 --apply-users 0   # a million-user tenant
    python scripts/bench.py --short                 # a quick run (CI)

Figures and the per-route minimum table: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.sandbox import Sandbox, SandboxConfig, Tenant

POLICIES = 50
GROUP_ASSIGNMENTS = 60
DIRECT_SHARE = 0.05
USERS_PAGE = 1000  # the largest $top of GET /Teams.User/users
BATCH = 20  # requests per Graph $batch
BUILT_INS = {"default", "edufaculty", "edustudent"}  # never managed by the generated files
APPLY_POLICIES = ("Clinical", "Nursing", "Support Staff")

# Sandbox route names (bridge/sandbox/api.py) of what a read sends.
OPENID = "GET /{tenant}/v2.0/.well-known/openid-configuration"
TOKEN = "POST /{tenant}/oauth2/v2.0/token"
LIST_POLICIES = "GET /Skype.Policy/configurations/TeamsMessagingPolicy"
LIST_GROUP_ASSIGNMENTS = "GET /Skype.Policy/groupPolicyAssignments/"
LIST_USERS = "GET /Teams.User/users"
GRAPH_BATCH = "POST /v1.0/$batch"
ORGANIZATION = "GET /v1.0/organization"  # the tenant's name, for plan, apply's prompt, reports
GROUP_BY_NAME = "GET /v1.0/groups"  # only ever sent inside a $batch
GROUP_BY_ID = "GET /v1.0/groups/{group}"
USER_BY_REF = "GET /v1.0/users/{user}"
INNER_ROUTES = (GROUP_BY_NAME, GROUP_BY_ID, USER_BY_REF)
GROUP_MEMBERS = "GET /v1.0/groups/{group}/members"
POLICY_ID = "GET /v1.0/admin/teams/policy/getPolicyId({args})"
# Write routes: anything the sandbox counts that is not a read.
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
NOT_WRITES = {TOKEN, GRAPH_BATCH}


# --------------------------------------------------------------------------- the yardsticks


def minimum_requests(users: int, groups: int) -> dict[str, int]:
    """The fewest HTTP requests a full read can take, by route: one list each for policies and
    group assignments, the user pages at 1,000 a page, the group names at 20 per ``$batch``,
    two tokens (Teams admin API, Graph), MSAL's one OpenID configuration and the organization
    (the tenant's name people read)."""
    return {
        OPENID: 1,
        TOKEN: 2,
        LIST_POLICIES: 1,
        LIST_GROUP_ASSIGNMENTS: 1,
        LIST_USERS: max(1, math.ceil(users / USERS_PAGE)),
        GRAPH_BATCH: math.ceil(groups / BATCH),
        ORGANIZATION: 1,
    }


SIGN_IN_ROUND_TRIPS = 2  # MSAL's OpenID discovery, then the first token


def floor_seconds(users: int, groups: int, latency: float, rate: float | None) -> float:
    """What no client can beat: the sign-in round trips plus one round trip per user page, since
    each page's link comes from the page before; or, if slower, the fewest requests at ``rate``
    (requests per second; None or 0: unpaced). Everything else can overlap with the pages."""
    pages = max(1, math.ceil(users / USERS_PAGE))
    chain = (SIGN_IN_ROUND_TRIPS + pages) * latency
    paced = sum(minimum_requests(users, groups).values()) / rate if rate else 0.0
    return max(chain, paced)


def apply_floor_seconds(
    users: int,
    writes: int,
    concurrency: int,
    latency: float,
    rate: float | None,
    *,
    reads: int = 2,
) -> float:
    """What no apply can beat: the sign-in round trips, one user-page chain per full read that
    must come before or after the writes (``reads``: the plan's read and verification's), and
    ``ceil(writes / concurrency)`` round trips of writes (at most ``concurrency`` in flight);
    or, if slower, the fewest requests at ``rate``: ``reads`` full reads (sign-in and the
    organization's name once: verification reads neither again) and the writes. Group lookups,
    policy lists and member reads can overlap with the chains."""
    pages = max(1, math.ceil(users / USERS_PAGE))
    chain = SIGN_IN_ROUND_TRIPS + reads * pages + math.ceil(writes / max(1, concurrency))
    read = sum(minimum_requests(users, GROUP_ASSIGNMENTS).values())
    once = minimum_requests(users, GROUP_ASSIGNMENTS)[OPENID] + 2  # discovery, two tokens
    once += 1  # the organization's name (plan's read only)
    paced = (read + (reads - 1) * (read - once) + writes) / rate if rate else 0.0
    return max(chain * latency, paced)


def per_user_requests(users: int, groups: int) -> int:
    """What a per-user reader sends: one request per user and one per group lookup."""
    return users + groups


# --------------------------------------------------------------------------- desired files


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML string


def desired_text(tenant: Tenant, *, drift: bool, new_assignments: int = 0) -> str:
    """A desired file managing the tenant's custom policies (two settings each), every
    messaging-policy group assignment (by group name) and every direct assignment (by UPN).

    ``drift``: two policies and 1% of the direct assignments differ from the tenant.
    ``new_assignments``: that many users without a direct assignment get one (what apply does).
    """
    policies = {p["Identity"]: p for p in tenant.list_policies()}
    lines = ["policies:"]
    custom = 0
    for identity, p in policies.items():
        name = identity.removeprefix("Tag:")
        if name.casefold() in BUILT_INS:
            continue
        priority = bool(p["AllowPriorityMessages"])
        if drift and name != "Global" and custom < 2:
            priority = not priority
            custom += 1
        lines += [
            f"  {_yaml_str(name)}:",
            f"    ReadReceiptsEnabledType: {p['ReadReceiptsEnabledType']}",
            f"    AllowPriorityMessages: {'true' if priority else 'false'}",
        ]

    names: dict[str, list[str]] = {}
    for g in tenant.groups():
        names.setdefault(g["displayName"].casefold(), []).append(g["id"])
    by_id = {g["id"]: g["displayName"] for g in tenant.groups()}
    lines += ["assignments:", "  groups:"]
    rank = 0
    for a in tenant.list_group_assignments():
        if a["PolicyType"] != "TeamsMessagingPolicy":
            continue
        rank += 1
        name = by_id[a["GroupId"]]
        ref = name if len(names[name.casefold()]) == 1 else a["GroupId"]
        lines += [
            f"    - group: {_yaml_str(ref)}",
            f"      policy: {_yaml_str(a['PolicyName'])}",
            f"      rank: {rank}",
        ]

    direct = tenant.direct_assignments()
    upns = dict(zip(tenant.user_ids, tenant.upns, strict=True))
    lines.append("  users:")
    for n, (uid, policy) in enumerate(sorted(direct.items(), key=lambda kv: upns[kv[0]])):
        if drift and n % 100 == 0:  # 1% moved elsewhere
            policy = "Kitchen" if policy != "Kitchen" else "Clinical"
        lines += [f"    - user: {_yaml_str(upns[uid])}", f"      policy: {_yaml_str(policy)}"]
    added = 0
    for uid in tenant.user_ids:
        if added >= new_assignments:
            break
        if uid in direct:
            continue
        policy = APPLY_POLICIES[added % len(APPLY_POLICIES)]
        lines += [f"    - user: {_yaml_str(upns[uid])}", f"      policy: {_yaml_str(policy)}"]
        added += 1
    if added < new_assignments:
        raise SystemExit(
            f"the tenant has only {added} users without a direct assignment; "
            f"--apply-users {new_assignments} needs a larger --apply-size"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Run:
    wall_s: float
    exit_code: int
    peak_rss_mb: float
    stdout: str
    stderr: str


def child_env(sb: Sandbox, concurrency: int, client_rps: float | None) -> dict[str, str]:
    """The parent's environment without its Azure/bridge settings, pointed at the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BRIDGE_"))}
    env.update(sb.env())
    env["BRIDGE_CONCURRENCY"] = str(concurrency)
    if client_rps:
        env["BRIDGE_MAX_RPS"] = f"{client_rps:g}"
    env["NO_COLOR"] = "1"
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> Run:
    """``python -m bridge ARGS`` as a child; its own peak RSS from ``wait4``."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with out.open("wb") as fout, err.open("wb") as ferr:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env=dict(env),
            cwd=cwd,
            stdout=fout,
            stderr=ferr,
            stdin=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    rss_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return Run(
        wall,
        proc.returncode,
        rss_mb,
        out.read_text(encoding="utf-8", errors="replace"),
        err.read_text(encoding="utf-8", errors="replace"),
    )


def fresh_throttle(sb: Sandbox, args: argparse.Namespace) -> None:
    """A full token bucket, so a run does not inherit the previous run's spent requests (a
    new process cannot know them; the Retry-After gate would cope, but the figures should not
    depend on run order)."""
    if args.throttle_rps:
        sb.configure(throttle_rps=args.throttle_rps)


def _check(run: Run, expected: int, what: str) -> None:
    if run.exit_code != expected:
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{what} exited {run.exit_code}, expected {expected}:\n{tail}")


# --------------------------------------------------------------------------- measurements


def sandbox_config(users: int, args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(
        users=users,
        seed=args.seed,
        policies=POLICIES,
        group_assignments=GROUP_ASSIGNMENTS,
        direct_share=DIRECT_SHARE,
        latency=args.latency,
        throttle_rps=args.throttle_rps or None,
    )


def _counts(stats: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(HTTP requests by route, requests sent inside $batch by route)."""
    routes = dict(stats["requests"])
    inner = {r: routes.pop(r) for r in INNER_ROUTES if r in routes}
    return dict(sorted(routes.items())), inner


def measure_drift(sb: Sandbox, users: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    desired = work / f"drift-{users}.yaml"
    desired.write_text(desired_text(sb.tenant, drift=True), encoding="utf-8")
    env = child_env(sb, args.concurrency, args.client_rps)
    runs = []
    stats: dict[str, Any] = {}
    for _ in range(args.repeat):
        fresh_throttle(sb, args)
        sb.reset_stats()
        run = run_cli(["drift", str(desired)], env, work)
        _check(run, 2, f"drift on {users:,} users")  # the file drifts on purpose
        stats = sb.stats()
        runs.append((run, stats))
    requests, inner = _counts(stats)
    groups = GROUP_ASSIGNMENTS
    minimum = minimum_requests(users, groups)
    total = sum(requests.values())
    peer = per_user_requests(users, groups)
    wall = statistics.median(r.wall_s for r, _ in runs)
    floor = floor_seconds(users, groups, args.latency, args.client_rps or args.throttle_rps)
    return {
        "users": users,
        "floor_s": round(floor, 3),
        "wall_s": wall,
        "wall_s_best": min(r.wall_s for r, _ in runs),
        "wall_s_runs": [round(r.wall_s, 3) for r, _ in runs],
        "ratio_to_floor": round(wall / floor, 3) if floor else None,
        "peak_rss_mb": max(r.peak_rss_mb for r, _ in runs),
        "http_requests": total,
        "requests": requests,
        "batched_requests": inner,
        "throttled": max(s["throttled"] for _, s in runs),
        "minimum": minimum,
        "minimum_total": sum(minimum.values()),
        "ratio_to_minimum": round(total / sum(minimum.values()), 3),
        "per_user_requests": peer,
        "per_user_ratio": round(peer / total, 1),
        "per_user_hours_at_throttle": (
            round(peer / args.throttle_rps / 3600, 2) if args.throttle_rps else None
        ),
    }


def apply_once(
    sb: Sandbox, users: int, changes: int, args: argparse.Namespace, work: Path
) -> tuple[Run, dict[str, Any]]:
    """One ``apply --auto-approve --force`` adding ``changes`` direct assignments (each run
    picks users the runs before left without one)."""
    desired = work / f"apply-{users}.yaml"
    desired.write_text(desired_text(sb.tenant, drift=False, new_assignments=changes), "utf-8")
    before = len(sb.tenant.direct_assignments())
    env = child_env(sb, args.concurrency, args.client_rps)
    fresh_throttle(sb, args)
    sb.reset_stats()
    run = run_cli(
        [
            "apply",
            str(desired),
            "--auto-approve",
            "--force",  # the share-of-users limit (10%) would refuse 10,000 of 100,000
            "--journal",
            str(work / "journal.jsonl"),
            "--lock-dir",
            str(work),
        ],
        env,
        work,
    )
    _check(run, 0, f"apply of {changes:,} assignments")
    stats = sb.stats()
    after = len(sb.tenant.direct_assignments())
    if after - before != changes:
        raise SystemExit(f"apply left {after - before} new direct assignments, not {changes}")
    return run, stats


def measure_apply(
    sb: Sandbox, users: int, changes: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    runs = [apply_once(sb, users, changes, args, work) for _ in range(args.repeat)]
    stats = runs[-1][1]
    requests, _ = _counts(stats)
    writes = {
        r: n
        for r, n in requests.items()
        if r.split(" ", 1)[0] in WRITE_METHODS and r not in NOT_WRITES
    }
    pages = max(1, math.ceil(users / USERS_PAGE))
    full_reads = requests.get(LIST_USERS, 0) / pages
    writes_total = sum(writes.values())
    http_total = sum(requests.values())
    floor = apply_floor_seconds(
        users, writes_total, args.concurrency, args.latency, args.client_rps or args.throttle_rps
    )
    wall = statistics.median(r.wall_s for r, _ in runs)
    return {
        "users": users,
        "changes": changes,
        "floor_s": round(floor, 3),
        "wall_s": wall,
        "wall_s_best": min(r.wall_s for r, _ in runs),
        "wall_s_runs": [round(r.wall_s, 3) for r, _ in runs],
        "ratio_to_floor": round(wall / floor, 3) if floor else None,
        "peak_rss_mb": max(r.peak_rss_mb for r, _ in runs),
        "write_requests": writes,
        "writes_total": writes_total,
        "policy_id_lookups": requests.get(POLICY_ID, 0),
        # the plan's read, then one per verification poll
        "full_reads": full_reads,
        "member_pages": requests.get(GROUP_MEMBERS, 0),
        "http_requests": http_total,
        "requests": requests,
        "throttled": max(s["throttled"] for _, s in runs),
    }


# --------------------------------------------------------------------------- output


def targets(result: Mapping[str, Any]) -> dict[str, bool]:
    """The issue's targets, for the sizes measured (100,000 users and a 10,000 apply)."""
    out: dict[str, bool] = {}
    for d in result["drift"]:
        if d["users"] >= 100_000:
            out[f"drift {d['users']:,} users requests = 1.00x minimum"] = (
                d["ratio_to_minimum"] == 1.0
            )
            if d["ratio_to_floor"] is not None:
                out[f"drift {d['users']:,} users <= 1.3x floor"] = d["ratio_to_floor"] <= 1.3
            rss = 1000 if d["users"] >= 1_000_000 else 500
            out[f"drift {d['users']:,} users peak RSS < {rss} MB"] = d["peak_rss_mb"] < rss
    apply = result.get("apply")
    if apply:
        if apply["ratio_to_floor"] is not None:
            out[f"apply {apply['changes']:,} <= 1.5x floor"] = apply["ratio_to_floor"] <= 1.5
        limit = math.ceil(apply["changes"] / 1000)
        out[f"apply {apply['changes']:,}: <= {limit} write requests"] = (
            apply["writes_total"] <= limit
        )
    return out


def render(result: Mapping[str, Any]) -> str:
    cfg = result["config"]
    throttle = f"{cfg['throttle_rps']:g} rps" if cfg["throttle_rps"] else "none"
    rate = f"{cfg['client_rps']:g} rps" if cfg["client_rps"] else "off"
    lines = [
        f"sandbox: latency {cfg['latency'] * 1000:.0f} ms, throttle {throttle}; "
        f"client: concurrency {cfg['concurrency']}, pacing {rate}; "
        f"{POLICIES} policies, {GROUP_ASSIGNMENTS} group assignments, "
        f"{DIRECT_SHARE:.0%} direct",
        f"host: {result['host']['cpus']} CPUs, load average (1/5/15 min) before "
        f"{result['host']['load_before']}, after {result['host']['load_after']}",
        "",
        f"{'drift':<10}{'floor s':>8}{'wall s':>8}{'best':>7}{'x floor':>8}{'RSS MB':>8}"
        f"{'HTTP':>7}{'min':>6}{'x min':>7}{'429':>6}{'per-user':>11}{'x fewer':>9}",
    ]
    for d in result["drift"]:
        ratio = f"{d['ratio_to_floor']:.2f}" if d["ratio_to_floor"] is not None else "-"
        lines.append(
            f"{d['users']:<10,}{d['floor_s']:>8.1f}{d['wall_s']:>8.1f}{d['wall_s_best']:>7.1f}"
            f"{ratio:>8}{d['peak_rss_mb']:>8.0f}{d['http_requests']:>7}"
            f"{d['minimum_total']:>6}{d['ratio_to_minimum']:>7.2f}{d['throttled']:>6}"
            f"{d['per_user_requests']:>11,}{d['per_user_ratio']:>9,.0f}"
        )
    lines.append(
        "floor: the sign-in round trips and one round trip per user page (each page's link "
        "comes from the one before) at the latency, or the fewest requests at the client's "
        "rate if slower; wall: median of the runs, start-up included"
    )
    lines += ["", "requests by route (actual / minimum):"]
    routes = sorted({r for d in result["drift"] for r in (*d["requests"], *d["minimum"])})
    header = "".join(f"{d['users']:>16,}" for d in result["drift"])
    lines.append(f"  {'route':<56}{header}")
    for route in routes:
        cells = "".join(
            f"{str(d['requests'].get(route, 0)) + ' / ' + str(d['minimum'].get(route, '-')):>16}"
            for d in result["drift"]
        )
        lines.append(f"  {route:<56}{cells}")
    for route in INNER_ROUTES:
        if any(route in d["batched_requests"] for d in result["drift"]):
            cells = "".join(f"{d['batched_requests'].get(route, 0):>16}" for d in result["drift"])
            lines.append(f"  {'  inside $batch: ' + route:<56}{cells}")
    apply = result.get("apply")
    if apply:
        writes = ", ".join(f"{r}: {n}" for r, n in apply["write_requests"].items()) or "none"
        ratio = f"{apply['ratio_to_floor']:.2f}" if apply["ratio_to_floor"] is not None else "-"
        lines += [
            "",
            f"apply {apply['changes']:,} direct assignments on {apply['users']:,} users: "
            f"floor {apply['floor_s']:.1f} s, wall {apply['wall_s']:.1f} s (median; best "
            f"{apply['wall_s_best']:.1f}; runs {apply['wall_s_runs']}), {ratio}x floor",
            f"  {apply['writes_total']} write requests ({writes}), "
            f"{apply['policy_id_lookups']} getPolicyId, {apply['full_reads']:g} full reads "
            f"(the plan, verification), {apply['member_pages']} group-member pages, "
            f"{apply['http_requests']} HTTP requests, {apply['throttled']} x 429, "
            f"peak RSS {apply['peak_rss_mb']:.0f} MB",
            "apply floor: sign-in round trips + two user-page chains (the plan's read, then "
            "verification's) + ceil(writes / concurrency) write round trips, at the latency; "
            "or the requests of two full reads and the writes at the client's rate if slower",
        ]
    lines.append("")
    for name, ok in result["targets"].items():
        lines.append(f"{'PASS' if ok else 'MISS'}  {name}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="tenant sizes in users, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--apply-users",
        type=int,
        default=10_000,
        help="direct assignments apply adds (0: no apply run; default: %(default)s)",
    )
    parser.add_argument(
        "--apply-size",
        type=int,
        default=None,
        help="the tenant size apply runs on (default: the largest of --sizes)",
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument(
        "--throttle-rps",
        type=float,
        default=30.0,
        help="the sandbox's requests per second before 429 (0: no throttle)",
    )
    parser.add_argument(
        "--client-rps",
        type=float,
        default=None,
        help="BRIDGE_MAX_RPS for teams-bridge (default: 90%% of --throttle-rps; 0: no pacing)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="BRIDGE_CONCURRENCY")
    parser.add_argument(
        "--repeat", type=int, default=1, help="drift and apply runs per size (median)"
    )
    parser.add_argument(
        "--apply-only",
        action="store_true",
        help="no drift runs: only apply, on --apply-size (default: the largest of --sizes)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--short",
        action="store_true",
        help="a quick run for CI: 1,000 users, apply 100, 10 ms latency, no throttle",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.short:
        args.sizes, args.apply_users, args.latency, args.throttle_rps = "1000", 100, 0.01, 0.0
    try:
        args.sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s})
    except ValueError:
        parser.error(f"--sizes takes whole numbers separated by commas, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes needs at least one size of 1 or more")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.client_rps is None:
        args.client_rps = 0.9 * args.throttle_rps if args.throttle_rps else 0.0
    if args.apply_size is None:
        args.apply_size = max(args.sizes)
    return args


def _load() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (None where there are none: Windows): on a
    shared machine the wall times mean little without them."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "format": "teams-bridge-bench",
        "version": 2,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": _load(),
        },
        "config": {
            "sizes": args.sizes,
            "latency": args.latency,
            "throttle_rps": args.throttle_rps,
            "client_rps": args.client_rps,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "seed": args.seed,
            "policies": POLICIES,
            "group_assignments": GROUP_ASSIGNMENTS,
            "direct_share": DIRECT_SHARE,
        },
        "drift": [],
        "apply": None,
    }
    sizes = sorted(set(args.sizes) | ({args.apply_size} if args.apply_users else set()))
    with tempfile.TemporaryDirectory(prefix="teams-bridge-bench-") as tmp:
        work = Path(tmp)
        for users in sizes:
            started = time.perf_counter()
            with Sandbox(sandbox_config(users, args)) as sb:
                seeded = time.perf_counter() - started
                print(f"seeded {users:,} users in {seeded:.1f} s", file=sys.stderr, flush=True)
                if users in args.sizes and not args.apply_only:
                    print(f"drift on {users:,} users...", file=sys.stderr, flush=True)
                    result["drift"].append(measure_drift(sb, users, args, work))
                if args.apply_users and users == args.apply_size:
                    print(
                        f"apply of {args.apply_users:,} on {users:,} users...",
                        file=sys.stderr,
                        flush=True,
                    )
                    result["apply"] = measure_apply(sb, users, args.apply_users, args, work)
    result["host"]["load_after"] = _load()
    result["targets"] = targets(result)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
