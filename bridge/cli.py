"""The command line: parse arguments, build objects, call one function, print, exit.

Exit codes: 0 ok / in sync, 1 error (usage errors included), 2 changes or drift present.
This is the only module that prints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from . import __version__, limits
from .errors import BridgeError, DesiredStateError
from .files import write_text_atomic
from .limits import COUNT, FLOOR, LOCK_SECONDS, NONNEGATIVE, SHARE, VERIFY_SECONDS, Number
from .logconfig import configure_logging
from .session import Session, SessionOptions

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def _stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def _color() -> bool:
    return _stdout_is_tty() and not os.environ.get("NO_COLOR")


def _err(message: str) -> None:
    from .report.render_text import printable_lines

    # Notes, progress and errors can carry tenant text (names): shown escaped, line breaks kept.
    click.echo(printable_lines(message), err=True)


def _err_line(line: str) -> None:
    """One line that names tenant objects (a progress or summary line): kept on one line, a
    line break in a name escaped too."""
    from .report.render_text import printable

    click.echo(printable(line), err=True)


def _write_text(path: str, text: str, *, private: bool = False) -> None:
    """Write atomically; a path that cannot be written is a ``BridgeError`` naming it (the
    helper ``write_snapshot`` shares). ``private``: 0600, for tenant data such as a plan."""
    write_text_atomic(path, text, private=private)


@contextlib.contextmanager
def _ticker(what: str, count: Callable[[], int]) -> Iterator[None]:
    """A one-line progress ticker on stderr while a long read runs (terminals only)."""
    stop = threading.Event()

    def tick() -> None:
        started = time.monotonic()
        while not stop.wait(0.25):
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                sys.stderr.write(f"\r{what}... {count()} requests, {elapsed:.0f} s")
                sys.stderr.flush()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


class _Ctx:
    def __init__(self, options: SessionOptions, progress: bool):
        self.options = options
        self.progress = progress

    def session(self) -> Session:
        return Session(self.options, prompt=_err, activity=_ticker if self.progress else None)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="teams-bridge")
@click.option(
    "--sandbox",
    is_flag=True,
    help="Run against an in-process simulated tenant (HTTPS, no credentials needed).",
)
@click.option(
    "--sandbox-users",
    type=click.IntRange(1, 200_000),
    default=2000,
    show_default=True,
    help="Size of the sandbox hospital.",
)
@click.option(
    "--snapshot",
    "snapshot",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Read current state from a saved snapshot instead of the tenant.",
)
@click.option(
    "--transport",
    type=click.Choice(["rest", "powershell"]),
    default="rest",
    show_default=True,
    envvar="BRIDGE_TRANSPORT",
    help="Teams admin API over HTTPS, or the MicrosoftTeams PowerShell module.",
)
@click.option(
    "--cloud",
    type=click.Choice(["commercial", "gcc", "gcchigh", "dod"]),
    help="Microsoft cloud (default: BRIDGE_CLOUD or commercial).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log line format (stderr).",
)
@click.pass_context
def main_group(
    ctx: click.Context,
    sandbox: bool,
    sandbox_users: int,
    snapshot: str | None,
    transport: str,
    cloud: str | None,
    verbose: int,
    log_format: str,
) -> None:
    """teams-bridge: Microsoft Teams messaging policies as code.

    Describe policies and their assignments in a desired-state file, then validate, plan, apply,
    and report drift. Exit codes: 0 ok / in sync, 1 error, 2 changes or drift present.
    """
    configure_logging(verbose, log_format)
    if _DOTENV_ERROR:
        raise _DOTENV_ERROR[0]  # here, so --version and --help still answer
    ctx.obj = _Ctx(
        SessionOptions(
            sandbox=sandbox,
            sandbox_users=sandbox_users,
            snapshot=snapshot,
            transport=transport,
            cloud=cloud,
        ),
        # Progress only for a person at a terminal, and not mixed with log lines.
        progress=sys.stderr.isatty() and verbose == 0 and not os.environ.get("CI"),
    )


# --------------------------------------------------------------------------- -o/--output


def _output_option(*, legacy_format: bool = False) -> Callable[[Any], Any]:
    """``-o/--output text|json``: one way to ask any command for machine output. With
    ``legacy_format``, the command's old ``--format text|json`` still works (hidden), with a
    deprecation note; ``--format`` is kept for report files only."""

    def decorate(fn: Any) -> Any:
        if legacy_format:
            fn = click.option(
                "--format", "legacy_format", type=click.Choice(["text", "json"]), hidden=True
            )(fn)
        return click.option(
            "-o",
            "--output",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="text for people, json for scripts (one JSON document on stdout).",
        )(fn)

    return decorate


def _output(output: str, legacy_format: str | None = None) -> str:
    """The output asked for: ``--format`` (deprecated) wins over the default, with a note."""
    if legacy_format is None:
        return output
    _err(f"note: --format {legacy_format} is deprecated here; use -o/--output {legacy_format}")
    return legacy_format


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------- validate / schema


@main_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_output_option()
def validate(file: str, output: str) -> None:
    """Check the desired-state FILE offline (exit 0 valid, 1 invalid)."""
    from .desired import load_desired

    desired = load_desired(file)
    for note in desired.notes:
        _err(note)
    if output == "json":
        _json_out(
            {
                "file": file,
                "valid": True,
                "policies": len(desired.policies),
                "group_assignments": len(desired.group_assignments),
                "user_assignments": len(desired.user_assignments),
                "notes": list(desired.notes),
            }
        )
        return
    click.echo(
        f"{file} is valid: {len(desired.policies)} policies, "
        f"{len(desired.group_assignments)} group assignments, "
        f"{len(desired.user_assignments)} user assignments."
    )


@main_group.command()
@click.option("--out", metavar="FILE", help="Write the schema here instead of stdout.")
def schema(out: str | None) -> None:
    """Print the JSON Schema of the desired-state file (for editor autocompletion)."""
    from .schema import desired_state_schema

    text = json.dumps(desired_state_schema(), indent=2) + "\n"
    if out:
        _write_text(out, text)
        click.echo(f"schema written to {out}")
    else:
        click.echo(text, nl=False)


# --------------------------------------------------------------------------- plan / apply


def _tenant_json(state: Any) -> dict[str, Any]:
    """The tenant in a command's JSON output: id, display name, default domain."""
    return {
        "id": state.tenant_id,
        "display_name": state.display_name,
        "default_domain": state.default_domain,
    }


@main_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    metavar="PLAN",
    help="Save the plan for 'apply --plan', with a checksum of the tenant state it was made "
    "from and a digest that refuses a file edited afterwards.",
)
@_output_option(legacy_format=True)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes (0 none, 1 error)."
)
@pass_ctx
def plan(
    ctx: _Ctx,
    file: str,
    out: str | None,
    output: str,
    legacy_format: str | None,
    detailed_exitcode: bool,
) -> None:
    """Show what apply would change to make the tenant match FILE."""
    fmt = _output(output, legacy_format)
    from .commands import make_plan
    from .plan_view import render_plan

    with ctx.session() as session:
        result = make_plan(session, file, saving=bool(out))
    _err(f"tenant: {result.current.label}")  # test and production told apart by name
    for note in result.notes:
        _err(note)
    if result.users_moved is not None:
        _err(
            f"this plan gives {result.users_moved} of {result.users_total} users a different "
            "effective policy"
        )
    if result.needs_force:
        from .report.render_text import printable

        _err(
            "warning: apply will refuse this plan without --force:\n  - "
            + "\n  - ".join(printable(reason) for reason in result.needs_force)
        )
    if fmt == "json":
        extra = {
            "tenant": _tenant_json(result.current),
            "needs_force": result.needs_force,
            "users_moved": result.users_moved,
            "users_total": result.users_total,
        }
        click.echo(json.dumps({**result.plan.data, **extra}, indent=2))
    else:
        click.echo(render_plan(result.plan, color=_color()), nl=False)
    if out:
        from .planfile import dumps as plan_file_text

        _write_text(out, plan_file_text(result.plan), private=True)
        _err(f"plan saved to {out}; apply it with: teams-bridge apply --plan {out}")
    if detailed_exitcode and result.plan:
        raise SystemExit(EXIT_CHANGES)


@main_group.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--plan",
    "plan_file",
    metavar="PLAN",
    type=click.Path(dir_okay=False),
    help="Apply a plan saved with 'plan --out' (refused if the tenant changed since).",
)
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Do not ask for confirmation (needed when there is no terminal).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Lift the safety limits (deletions, share of users "
    "affected, clinical settings turned off).",
)
@click.option(
    "--journal",
    metavar="FILE",
    envvar="BRIDGE_JOURNAL",
    default=None,
    help="JSON-lines audit trail of every change attempted (default: "
    "teams-bridge-journal.jsonl in the user's state directory, e.g. "
    "~/.local/state/teams-bridge; never the working directory).",
)
@click.option(
    "--lock-dir",
    metavar="DIR",
    envvar="BRIDGE_LOCK_DIR",
    default=None,
    help="Where the one-writer-per-tenant lock lives; scheduled jobs of different users that "
    "must exclude each other share one (default: ~/.local/state/teams-bridge).",
)
@click.option(
    "--lock-timeout",
    type=Number(LOCK_SECONDS),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another apply on the same tenant.",
)
@click.option(
    "--max-policy-deletes",
    type=Number(COUNT),
    default=None,
    help="Override the file's safety.max_policy_deletes (default 3).",
)
@click.option(
    "--max-user-change-share",
    type=Number(SHARE),
    default=None,
    help="Override the file's safety.max_user_change_share, 0 to 1 (default 0.1).",
)
@click.option(
    "--user-change-floor",
    type=Number(FLOOR),
    default=None,
    help="Override the file's safety.user_change_floor: the share limit applies only when "
    "more users than this move (default 50).",
)
@click.option(
    "--verify-timeout",
    type=Number(VERIFY_SECONDS),
    default=60.0,
    show_default=True,
    help="Seconds to wait for accepted assignments to show on reads.",
)
@click.option(
    "--reason",
    metavar="TEXT",
    envvar="BRIDGE_REASON",
    help="Why this run: recorded, with who ran it, in the journal.",
)
@click.option(
    "--ticket",
    metavar="REF",
    envvar="BRIDGE_TICKET",
    help="The change-control reference (e.g. CHG123): recorded in the journal.",
)
@pass_ctx
def apply(
    ctx: _Ctx,
    file: str | None,
    plan_file: str | None,
    auto_approve: bool,
    force: bool,
    journal: str | None,
    lock_dir: str | None,
    lock_timeout: float,
    max_policy_deletes: int | None,
    max_user_change_share: float | None,
    user_change_floor: int | None,
    verify_timeout: float,
    reason: str | None,
    ticket: str | None,
) -> None:
    """Make the changes: 'apply FILE' plans and applies; 'apply --plan PLAN' applies a saved
    plan."""
    from .apply import ApplyFailed, interrupted_result
    from .commands import ApplyRequest, default_journal_path, run_apply
    from .plan_view import render_plan
    from .report.render_text import printable

    if bool(file) == bool(plan_file):
        raise click.UsageError("give either FILE or --plan PLAN (one of them)")

    def confirm(plan: Any, tenant: str) -> bool:
        click.echo(render_plan(plan, color=_color()), nl=False)
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise BridgeError(
                "apply needs confirmation and there is no terminal: review the plan, then re-run "
                "with --auto-approve (a saved plan too: apply --plan PLAN --auto-approve)"
            )
        return click.confirm(f"Apply these changes to {printable(tenant)}?", default=False)

    request = ApplyRequest(
        desired_file=file,
        plan_file=plan_file,
        force=force,
        journal_path=journal or default_journal_path(),
        lock_dir=lock_dir,
        lock_timeout=lock_timeout,
        verify_timeout=verify_timeout,
        max_policy_deletes=max_policy_deletes,
        max_user_change_share=max_user_change_share,
        user_change_floor=user_change_floor,
        reason=reason,
        ticket=ticket,
    )
    with ctx.session() as session:
        try:
            outcome = run_apply(session, request, confirm=confirm, progress=_err_line)
        except ApplyFailed as exc:
            # Say what was done and what was not before the error line.
            for line in exc.result.summary_lines():
                _err_line(line)
            raise
        except KeyboardInterrupt as exc:
            # ^C or SIGTERM mid-apply: what was done, and above all a group left with no policy.
            result = interrupted_result(exc)
            if result is not None:
                for line in interrupted_lines(result):
                    _err_line(line)
            raise
    for line in outcome.lines:
        click.echo(printable(line))  # summary lines name policies, groups and users
    if outcome.cancelled:
        raise SystemExit(1)


# --------------------------------------------------------------------------- drift


@main_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--report-dir", metavar="DIR", help="Write report files here.")
@click.option(
    "--format",
    "formats",
    default="json,html,md,junit",
    show_default=True,
    help="Report files to write with --report-dir (comma-separated: json, html, md, junit).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="What to print on stdout: text for people, json (the report) for scripts.",
)
@click.option(
    "--history",
    "history_file",
    metavar="FILE",
    envvar="BRIDGE_HISTORY",
    help="Record this run in a SQLite history file; reports show when drift was first seen.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["warning", "error", "never"]),
    default="error",
    show_default=True,
    help="Which healthcare findings count as drift for the exit code: errors only (the "
    "default), warnings and errors, or none (findings are reported either way).",
)
@click.option(
    "--notify",
    metavar="URL",
    envvar="BRIDGE_NOTIFY_URL",
    help="POST a notification here when drift is found (checked before anything is read; "
    "a failed post makes the run exit 1 after the reports are written).",
)
@click.option(
    "--notify-format",
    type=click.Choice(["teams", "json"]),
    default="teams",
    show_default=True,
    help="teams: a Teams incoming-webhook card carrying the JSON summary as its "
    "'teamsBridgeSummary' field; json: the JSON summary alone.",
)
@click.option(
    "--reason",
    metavar="TEXT",
    envvar="BRIDGE_REASON",
    help="Why this run: recorded, with who ran it, in the reports.",
)
@click.option(
    "--ticket",
    metavar="REF",
    envvar="BRIDGE_TICKET",
    help="The change-control reference (e.g. CHG123): recorded in the reports.",
)
@pass_ctx
def drift(
    ctx: _Ctx,
    file: str,
    report_dir: str | None,
    formats: str,
    output: str,
    history_file: str | None,
    fail_on: str,
    notify: str | None,
    notify_format: str,
    reason: str | None,
    ticket: str | None,
) -> None:
    """Report drift between the tenant and FILE (exit 0 in sync, 2 drift, 1 error)."""
    from .commands import DriftRequest, run_drift

    source = click.get_current_context().get_parameter_source("formats")
    if source is click.core.ParameterSource.COMMANDLINE and not report_dir:
        raise click.UsageError(
            "--format picks the report files --report-dir writes; for JSON on stdout use "
            "--output json"
        )
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    bad = sorted(set(wanted) - {"json", "html", "md", "junit"})
    if bad:
        raise click.UsageError(
            f"unknown report format(s) {', '.join(bad)}; choose from json, html, md, junit"
        )
    request = DriftRequest(
        desired_file=file,
        report_dir=report_dir,
        formats=tuple(wanted),
        history_file=history_file,
        notify_url=notify,
        notify_format=notify_format,
        color=_color(),
        fail_on={"warning": ("warning", "error"), "error": ("error",), "never": ()}[fail_on],
        reason=reason,
        ticket=ticket,
    )
    with ctx.session() as session:
        outcome = run_drift(session, request)
    if output == "json":
        click.echo(json.dumps(outcome.report.to_dict(), indent=2))
    else:
        click.echo(outcome.text, nl=False)
    for path in outcome.written:
        _err(f"report written: {path}")
    for warning in outcome.warnings:
        _err(warning)
    raise SystemExit(outcome.exit_code)


@main_group.command()
@click.option(
    "--history",
    "history_file",
    metavar="FILE",
    envvar="BRIDGE_HISTORY",
    required=True,
    help="The SQLite history file drift --history writes.",
)
@click.option(
    "--limit", type=Number(COUNT), default=20, show_default=True, help="How many runs to list."
)
@_output_option(legacy_format=True)
def history(history_file: str, limit: int, output: str, legacy_format: str | None) -> None:
    """List recorded drift runs and the drift still open, with its age."""
    from .commands import history_view

    fmt = _output(output, legacy_format)
    text, data = history_view(history_file, limit)
    click.echo(json.dumps(data, indent=2) if fmt == "json" else text, nl=fmt == "json")


# --------------------------------------------------------------------------- export / snapshot


@main_group.command()
@click.option("--out", metavar="FILE", help="Write here instead of stdout.")
@click.option(
    "--minimal",
    is_flag=True,
    help="Only the settings that differ from the service's defaults, with the $schema line: a "
    "first desired file short enough to review.",
)
@_output_option()
@pass_ctx
def export(ctx: _Ctx, out: str | None, minimal: bool, output: str) -> None:
    """Write the tenant's current state as a desired-state file (with --out, -o json prints
    a summary of what was written)."""
    from .export import export_yaml

    if output == "json" and not out:
        raise click.UsageError("-o json prints a summary of the file --out writes: give --out")
    with ctx.session() as session:
        state = session.read()
        text = export_yaml(state, minimal=minimal)
    if out:
        _write_text(out, text, private=True)  # names every user with a direct assignment
        if output == "json":
            _json_out(
                {
                    "written": out,
                    "tenant": _tenant_json(state),
                    "policies": len(state.policies),
                    "group_assignments": len(state.group_assignments),
                    "user_assignments": len(state.user_assignments),
                }
            )
        else:
            _err(f"desired state written to {out}")
    else:
        click.echo(text, nl=False)


@main_group.command()
@click.option(
    "--out",
    metavar="FILE",
    default=None,
    help="Write here (default: snapshot-<tenant>-<time>.json).",
)
@pass_ctx
def snapshot(ctx: _Ctx, out: str | None) -> None:
    """Save the tenant's current state as JSON, for offline review and --snapshot."""
    import datetime as dt

    from .backends.snapshot import write_snapshot
    from .roles import ATTRIBUTES

    with ctx.session() as session:
        # Every attribute a role may name, in the same pages: --snapshot then plans roles (a
        # snapshot of a snapshot keeps what the first one holds). Group members make the
        # snapshot enough for an offline 'explain'.
        offline = session.is_offline
        state = session.read(
            attributes=() if offline else ATTRIBUTES,
            domains=True,
            all_members=not offline,
            organization=True,
        )
        source = session.source
    if not out:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = f"snapshot-{state.tenant_id or 'tenant'}-{stamp}.json"
    write_snapshot(state, out, source)
    click.echo(
        f"snapshot of {len(state.policies)} policies, {len(state.group_assignments)} "
        f"group assignments, {len(state.user_assignments)} direct assignments "
        f"written to {out}"
    )


# --------------------------------------------------------------------------- explain


@main_group.command()
@click.argument("user")
@_output_option(legacy_format=True)
@click.option(
    "--desired",
    type=click.Path(dir_okay=False),
    default=None,
    help="A desired-state file: also say which of its roles selects USER, and why.",
)
@pass_ctx
def explain(
    ctx: _Ctx, user: str, output: str, legacy_format: str | None, desired: str | None
) -> None:
    """Show USER's effective messaging policy and why (direct, group and rank, or Global);
    with --desired FILE, also which of its roles selects USER and the attribute values that
    did (or why none does)."""
    from .commands import explain_user
    from .explain import render_explanation

    fmt = _output(output, legacy_format)
    with ctx.session() as session:
        result = explain_user(session, user, desired)
    if fmt == "json":
        click.echo(json.dumps(result.data(), indent=2))
        return
    click.echo(render_explanation(result), nl=False)  # tenant text escaped there


@main_group.command("suggest-roles")
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0),
    default=0.95,
    show_default=True,
    help="Share of a department's (or job title's) people who must already share one policy.",
)
@click.option(
    "--min-people",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Smallest department or job title to propose a role for.",
)
@pass_ctx
def suggest_roles(ctx: _Ctx, threshold: float, min_people: int) -> None:
    """Propose an assignments.roles block from the tenant as it is: departments, then job
    titles, whose people already share one effective policy, with how many each would move."""
    from .commands import suggest_roles as suggest
    from .report.render_text import printable

    with ctx.session() as session:
        text = suggest(session, threshold, min_people)
    click.echo("".join(printable(line) + "\n" for line in text.splitlines()), nl=False)


# --------------------------------------------------------------------------- doctor / sandbox


@main_group.command()
@_output_option()
@pass_ctx
def doctor(ctx: _Ctx, output: str) -> None:
    """Check configuration, credentials, tokens, directory roles and API access."""
    from .commands import run_doctor_checks
    from .report.render_text import printable

    with ctx.session() as session:
        checks = run_doctor_checks(session)
    if output == "json":
        _json_out(
            {
                "ok": all(c.ok for c in checks),
                "checks": [
                    {"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix or None}
                    for c in checks
                ],
            }
        )
        if not all(c.ok for c in checks):
            raise SystemExit(EXIT_ERROR)
        return
    failed = 0
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        # Details quote what the tenant and the token say (names, roles): shown escaped.
        click.echo(printable(f"[{mark}] {check.name}: {check.detail}"))
        if not check.ok:
            failed += 1
            if check.fix:
                click.echo(printable(f"       fix: {check.fix}"))
    click.echo(f"{len(checks) - failed} of {len(checks)} checks passed.")
    if failed:
        raise SystemExit(EXIT_ERROR)


def _sandbox_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One option per ``SandboxConfig`` knob, with the knob's own help text."""
    from .sandbox.config import SandboxConfig, option_fields

    defaults = SandboxConfig()
    # Numbers finite and not negative (each knob's own range is SandboxConfig's check).
    types = {"int": int, "float": Number(NONNEGATIVE), "str": str}
    for f in reversed(option_fields()):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "roles":
            fn = click.option(
                flag,
                multiple=True,
                default=default,
                show_default=True,
                type=click.Choice(["teams_admin", "global_admin", "global_reader"]),
                help=f.metadata["help"] + " (repeat for several; see --no-roles)",
            )(fn)
            continue
        kind = types[str(f.type).split(" |")[0]]
        fn = click.option(
            flag,
            type=kind,
            default=default,
            show_default=default is not None,
            help=f.metadata["help"],
        )(fn)
    return fn


@main_group.command()
@_sandbox_options
@click.option(
    "--no-roles",
    is_flag=True,
    help="The app holds no directory role (every API call answers 403), to see the role hint.",
)
@click.option(
    "--tenants",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Serve this many hospitals behind the same endpoints, each with its own app and secret "
    "(sign-ins routed by the tenant in the path, API calls by the token's tenant).",
)
@click.option(
    "--fleet-file",
    metavar="FLEET",
    type=click.Path(dir_okay=False),
    help="With --tenants: write a fleet file for these tenants here, a desired-state file and a "
    ".env with the variables beside it (cd there, then: teams-bridge fleet FLEET drift).",
)
def sandbox(no_roles: bool, tenants: int, fleet_file: str | None, **knobs: Any) -> None:
    """Serve the simulated hospital tenant over HTTPS until interrupted, after printing the
    variables that point a second shell at it."""
    import signal
    import threading

    from .sandbox import Sandbox, SandboxConfig

    if no_roles:
        knobs["roles"] = ()
    try:
        config = SandboxConfig(**knobs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # SIGTERM (kill, a container stopping) unwinds like Ctrl+C, so temporary files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if tenants > 1 or fleet_file:
        _sandbox_fleet(config, tenants, fleet_file)
        return
    with Sandbox(config) as sb:
        click.echo(f"# sandbox tenant {sb.tenant_id} ({config.users} users) at {sb.base_url}")
        click.echo("# in another shell, run these lines, then e.g. teams-bridge plan FILE:")
        for key, value in sb.env().items():
            click.echo(f"export {key}={value}")
        click.echo(
            f"# certificate credential instead of the secret: "
            f"export AZURE_CLIENT_CERTIFICATE_PATH={sb.client_cert_path}"
        )
        click.echo("# serving; press Ctrl+C to stop")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("# sandbox stopped")


def _sandbox_fleet(config: Any, tenants: int, fleet_file: str | None) -> None:
    """``sandbox --tenants N``: serve the hospitals, print (and with --fleet-file write) what
    points a fleet at them."""
    from .sandbox import SandboxFleet
    from .sandbox.server import DEMO_DESIRED

    with SandboxFleet(tenants, config) as sf:
        variables = {**sf.env(), **sf.secrets_env()}
        click.echo(
            f"# sandbox fleet: {tenants} hospitals ({config.users} users each) at {sf.base_url}"
        )
        for i in range(tenants):
            click.echo(
                f"# {sf.name(i)}: tenant {sf.tenant_ids[i]}, app {sf.client_ids[i]}, "
                f"secret in {sf.secret_env(i)}"
            )
        if fleet_file:
            folder = os.path.dirname(os.path.abspath(fleet_file))
            os.makedirs(folder, exist_ok=True)
            desired = "sandbox-desired.yaml"
            _write_text(os.path.join(folder, desired), DEMO_DESIRED)
            _write_text(fleet_file, sf.fleet_file_text(desired))
            # "export K=V": a shell can source it, and teams-bridge reads it as a .env too.
            env_text = "".join(f"export {k}={v}\n" for k, v in variables.items())
            _write_text(os.path.join(folder, ".env"), env_text, private=True)
            click.echo(f"# wrote {fleet_file}, {desired} and .env (the variables) in {folder}")
            env_file = os.path.join(os.path.dirname(fleet_file), ".env")
            click.echo(f"# in another shell: . {env_file} && teams-bridge fleet {fleet_file} drift")
        else:
            click.echo("# in another shell, run these lines, then teams-bridge fleet FLEET drift:")
        for key, value in variables.items():
            click.echo(f"export {key}={value}")
        click.echo("# serving; press Ctrl+C to stop")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("# sandbox stopped")


# --------------------------------------------------------------------------- serve


@main_group.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--fleet",
    "fleet_file",
    metavar="FLEET",
    type=click.Path(dir_okay=False),
    help="Serve every tenant of this fleet file instead of FILE: each on its own interval and "
    "mode (from the file), metrics per tenant, /report the fleet page.",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="With --fleet: only the tenants of shard I of N (default: from BRIDGE_SHARD, or "
    "BRIDGE_SHARDS and the StatefulSet ordinal).",
)
@click.option(
    "--concurrency",
    type=Number(limits.CONCURRENCY),
    default=4,
    show_default=True,
    envvar="BRIDGE_FLEET_CONCURRENCY",
    help="With --fleet: runs at once.",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    envvar="BRIDGE_FLEET_STATE",
    default="fleet-state",
    show_default=True,
    help="With --fleet: per tenant token cache, history and journal.",
)
@click.option(
    "--interval",
    default="15m",
    show_default=True,
    envvar="BRIDGE_INTERVAL",
    help="Time between runs: 90s, 15m, 1h (a bare number is seconds); +-10% jitter.",
)
@click.option(
    "--mode",
    type=click.Choice(["drift", "apply"]),
    default="drift",
    show_default=True,
    help="drift: report only; apply: also apply within the safety limits (never forced: a plan "
    "over them is a 'refused' run, notified once).",
)
@click.option(
    "--listen",
    default="127.0.0.1:9464",
    show_default=True,
    envvar="BRIDGE_LISTEN",
    help="HOST:PORT for /healthz, /readyz, /metrics, /report, /report.json (0.0.0.0:9464 in a "
    "container).",
)
@click.option(
    "--run-timeout",
    default=None,
    help="Longest a run may take before it is stopped and counted an error (default: the "
    "interval, at least 10m).",
)
@click.option(
    "--history",
    "history_file",
    metavar="FILE",
    envvar="BRIDGE_HISTORY",
    default="teams-bridge-history.sqlite",
    show_default=True,
    help="Record every run in this SQLite history file (teams-bridge history reads it); "
    "reports show when drift was first seen.",
)
@click.option(
    "--journal",
    metavar="FILE",
    envvar="BRIDGE_JOURNAL",
    default=None,
    help="Apply mode: JSON-lines audit trail of every change attempted (default: "
    "teams-bridge-journal.jsonl in the user's state directory, e.g. "
    "~/.local/state/teams-bridge; never the working directory).",
)
@click.option(
    "--lock-dir",
    metavar="DIR",
    envvar="BRIDGE_LOCK_DIR",
    default=None,
    help="Apply mode: where the one-writer-per-tenant lock lives.",
)
@click.option(
    "--notify",
    metavar="URL",
    envvar="BRIDGE_NOTIFY_URL",
    help="POST here when the state changes: new drift, drift resolved, runs failing, a plan "
    "refused (once each, not on every run).",
)
@click.option(
    "--notify-format", type=click.Choice(["teams", "json"]), default="teams", show_default=True
)
@click.option(
    "--fail-on",
    type=click.Choice(["warning", "error", "never"]),
    default="error",
    show_default=True,
    help="Which healthcare findings count as drift.",
)
@pass_ctx
def serve(
    ctx: _Ctx,
    file: str | None,
    fleet_file: str | None,
    shard: str | None,
    concurrency: int,
    state_dir: str,
    interval: str,
    mode: str,
    listen: str,
    run_timeout: str | None,
    history_file: str | None,
    journal: str | None,
    lock_dir: str | None,
    notify: str | None,
    notify_format: str,
    fail_on: str,
) -> None:
    """The reconciling service: run drift (or apply) on FILE every --interval and serve health,
    Prometheus metrics and the last report on --listen. SIGTERM stops it after the current step
    (exit 0). With --fleet FLEET: every tenant of the fleet file."""
    if bool(file) == bool(fleet_file):
        raise click.UsageError("give either FILE or --fleet FLEET (one of them)")
    if fleet_file:
        given = click.get_current_context().get_parameter_source
        for option in ("interval", "mode", "history_file", "journal", "lock_dir"):
            if given(option) is click.core.ParameterSource.COMMANDLINE:
                flag = {"history_file": "history", "lock_dir": "lock-dir"}.get(option, option)
                raise click.UsageError(
                    f"--{flag} is per tenant with --fleet: the fleet file sets interval and "
                    "mode; history, journal and lock live under --state-dir"
                )
        _serve_fleet(
            ctx,
            fleet_file,
            shard=shard,
            concurrency=concurrency,
            state_dir=state_dir,
            listen=listen,
            run_timeout=run_timeout,
            fail_on=fail_on,
            notify=notify,
            notify_format=notify_format,
        )
        return
    assert file is not None

    from .commands import default_journal_path
    from .desired import load_desired
    from .report.notify import check_webhook_url, webhook_poster
    from .service import (
        Reconciler,
        RunRecord,
        ServiceConfig,
        ServiceLoop,
        ServiceMetrics,
        StatusServer,
        parse_duration,
        parse_listen,
    )

    config = ServiceConfig(
        desired_file=file,
        mode=mode,
        interval=parse_duration(interval),
        run_timeout=parse_duration(run_timeout, "--run-timeout") if run_timeout else None,
        history_file=history_file,
        journal_path=journal or default_journal_path(),
        lock_dir=lock_dir,
        notify_url=notify,
        notify_format=notify_format,
        fail_on={"warning": ("warning", "error"), "error": ("error",), "never": ()}[fail_on],
    )
    host, port = parse_listen(listen)
    if notify:
        check_webhook_url(notify)
    desired = load_desired(file)  # an invalid file stops the service before it starts
    with ctx.session() as session:
        if config.mode == "apply" and session.is_offline:
            raise BridgeError("serve --mode apply needs a tenant: a snapshot is read-only")
        session.backend()  # settings and credentials checked now (and the sandbox started)
        settings = session.settings
        tenant = desired.tenant or (settings.tenant_id if settings else None) or "unknown"
        metrics = ServiceMetrics(tenant)

        def said(record: RunRecord) -> None:
            drift = f", {record.pending} change(s) pending" if record.pending else ""
            why = f": {record.message}" if record.message else ""
            _err(f"run {loop.runs}: {record.result} in {record.seconds:.1f}s{drift}{why}")

        loop = ServiceLoop(
            config,
            Reconciler(session, config).run,
            metrics,
            poster=webhook_poster(settings),
            on_run=said,
        )
        server = StatusServer(loop, host, port).start()
        _err(
            f"serving {config.mode} of {file} for tenant {tenant} every {interval} on "
            f"{server.url} (/healthz /readyz /metrics /report /report.json)"
        )
        sys.stderr.flush()
        _until_signalled(loop.run_forever, loop.stop, server.close)
    _err("stopped")


# --------------------------------------------------------------------------- fleet


def _fleet_shard(shard: str | None) -> Any:
    from .fleet import default_shard, parse_shard

    return parse_shard(shard) if shard else default_shard()


def _serve_fleet(
    ctx: _Ctx,
    fleet_file: str,
    *,
    shard: str | None,
    concurrency: int,
    state_dir: str,
    listen: str,
    run_timeout: str | None,
    fail_on: str,
    notify: str | None,
    notify_format: str,
) -> None:
    from .fleet import load_fleet
    from .report.notify import check_webhook_url, webhook_poster
    from .service import StatusServer, parse_duration, parse_listen
    from .service.fleet import FleetService

    if ctx.options.sandbox or ctx.options.snapshot:
        raise click.UsageError(
            "serve --fleet reads each tenant of FLEET: drop --sandbox/--snapshot"
        )
    host, port = parse_listen(listen)
    if notify:
        check_webhook_url(notify)
    picked = _fleet_shard(shard)
    chosen = load_fleet(fleet_file).shard(picked.index, picked.count)

    def said(name: str, record: Any) -> None:
        why = f": {record.message}" if record.message else ""
        _err_line(f"{name}: {record.result} in {record.seconds:.1f}s{why}")

    service = FleetService(
        chosen,
        state_dir=state_dir,
        shard=picked,
        concurrency=concurrency,
        run_timeout=parse_duration(run_timeout, "--run-timeout") if run_timeout else None,
        transport=ctx.options.transport,
        cloud=ctx.options.cloud,
        fail_on={"warning": ("warning", "error"), "error": ("error",), "never": ()}[fail_on],
        notify_url=notify,
        notify_format=notify_format,
        on_run=said,
        poster=webhook_poster(None),
    )
    server = StatusServer(service, host, port).start()  # type: ignore[arg-type]
    _err(
        f"serving {len(chosen.tenants)} tenant(s) of {fleet_file} (shard {picked}) on "
        f"{server.url} (/healthz /readyz /metrics /report /report/NAME)"
    )
    sys.stderr.flush()

    def close() -> None:
        server.close()
        service.close()

    _until_signalled(service.run_forever, service.stop, close)
    _err("stopped")


def _until_signalled(
    run_forever: Callable[[], None], stop: Callable[[], None], close: Callable[[], None]
) -> None:
    """Run a service until SIGTERM or Ctrl+C asks it to ``stop`` (after its current step), then
    put the signal handlers back and ``close`` its endpoints."""
    import signal

    previous = {
        sig: signal.signal(sig, lambda *_: stop()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        run_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        close()


@main_group.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(dir_okay=False))
@click.argument("action", type=click.Choice(["drift", "plan", "apply"]))
@click.option(
    "--shard",
    metavar="I/N",
    help="Run only the tenants a stable hash gives shard I of N (from 0). Default: "
    "BRIDGE_SHARD=I/N, or BRIDGE_SHARDS=N with the index from the pod (an Indexed Job's "
    "JOB_COMPLETION_INDEX or a StatefulSet's ordinal); else every tenant.",
)
@click.option(
    "--concurrency",
    type=Number(limits.CONCURRENCY),
    default=4,
    show_default=True,
    envvar="BRIDGE_FLEET_CONCURRENCY",
    help="Tenants run at once (each with its own connections and rate).",
)
@click.option(
    "--report-dir",
    metavar="DIR",
    default="fleet-reports",
    show_default=True,
    help="The fleet report (fleet-report.html/.json/.md) and one directory per tenant.",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    envvar="BRIDGE_FLEET_STATE",
    default="fleet-state",
    show_default=True,
    help="Per tenant: token cache, history, journal, last success.",
)
@click.option(
    "--auto-approve",
    is_flag=True,
    help="apply: do not ask (needed without a terminal). Only tenants whose mode is apply are "
    "written; each tenant's safety limits hold and are never forced.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["warning", "error", "never"]),
    default="error",
    show_default=True,
    help="Which healthcare findings count as drift.",
)
@pass_ctx
def fleet(
    ctx: _Ctx,
    fleet_file: str,
    action: str,
    shard: str | None,
    concurrency: int,
    report_dir: str,
    state_dir: str,
    auto_approve: bool,
    fail_on: str,
) -> None:
    """Run drift, plan or apply for every tenant of FLEET (exit as drift: the worst tenant
    wins). One tenant's failure never stops the others; a fleet report is written beside the
    tenants' own."""
    from .fleet import FleetOptions, FleetRunner, TenantRow, load_fleet

    if ctx.options.sandbox or ctx.options.snapshot:
        raise click.UsageError(
            "fleet reads each tenant of FLEET: drop --sandbox/--snapshot (for a simulated "
            "fleet, run teams-bridge sandbox --tenants N --fleet-file FLEET)"
        )
    picked = _fleet_shard(shard)
    whole = load_fleet(fleet_file)
    chosen = whole.shard(picked.index, picked.count)
    writers = [t.name for t in chosen.tenants if t.mode == "apply"]
    if action == "apply" and writers and not auto_approve:
        if not sys.stdin.isatty():
            raise BridgeError(
                "fleet apply needs confirmation and there is no terminal: review with "
                f"teams-bridge fleet {fleet_file} plan, then re-run with --auto-approve"
            )
        if not click.confirm(
            f"Apply to {len(writers)} tenant(s) whose mode is apply ({', '.join(writers)})? "
            "The others get a drift run.",
            default=False,
        ):
            _err("Apply cancelled; nothing was changed.")
            raise SystemExit(EXIT_ERROR)
    options = FleetOptions(
        action=action,
        report_dir=report_dir,
        state_dir=state_dir,
        concurrency=concurrency,
        transport=ctx.options.transport,
        cloud=ctx.options.cloud,
        fail_on={"warning": ("warning", "error"), "error": ("error",), "never": ()}[fail_on],
    )
    _err(
        f"fleet {action}: {len(chosen.tenants)} of {len(whole.tenants)} tenant(s) (shard "
        f"{picked}), {concurrency} at a time"
    )

    def done(row: TenantRow) -> None:
        why = f": {row.message}" if row.message and row.state in ("error", "refused") else ""
        pending = f", {row.changes} change(s) to make" if row.changes else ""
        _err_line(f"{row.name}: {row.state} in {row.seconds:.1f}s{pending}{why}")

    result = FleetRunner(chosen, options, on_done=done).run(picked)
    states = result.to_dict()["states"]
    summary = ", ".join(f"{n} {state}" for state, n in states.items() if n) or "no tenants"
    click.echo(f"Fleet {action}: {summary} (exit {result.exit_code}).")
    for path in result.written:
        _err(f"fleet report written: {path}")
    raise SystemExit(result.exit_code)


# --------------------------------------------------------------------------- entry point


def interrupted_lines(result: Any) -> list[str]:
    """What an interrupted apply says before 'interrupted': its summary and, when a group was
    left with no messaging policy (the replacement's undo failed too), the error and the fix."""
    lines = list(result.summary_lines())
    if any(f.left_without_policy for f in result.failed):
        lines.append(f"error: apply interrupted: {result.failure_message()}")
    return lines


def _run(fn: Callable[[], Any]) -> NoReturn:
    try:
        fn()
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:  # exit 2 is reserved for "changes present"
        exc.show()
        raise SystemExit(EXIT_ERROR) from None
    except click.Abort:
        _err("aborted")
        raise SystemExit(EXIT_ERROR) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(EXIT_ERROR) from None
    except BridgeError as exc:
        logging.getLogger("bridge").debug("error", exc_info=True)
        # Validation problems already read "file:line:col: error: ...".
        _err(str(exc) if isinstance(exc, DesiredStateError) else f"error: {exc}")
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        _err("interrupted")
        # 128 + the signal: 130 for Ctrl+C (SIGINT), 143 for SIGTERM (apply's Terminated).
        raise SystemExit(getattr(exc, "exit_code", EXIT_INTERRUPTED)) from None
    raise SystemExit(EXIT_OK)


# A .env that cannot be read: raised by every command, while --version and --help still work.
_DOTENV_ERROR: list[BridgeError] = []


def _load_dotenv(path: str = ".env") -> None:
    """``.env`` in the working directory feeds every setting, the command-line ones
    (BRIDGE_JOURNAL, BRIDGE_HISTORY...) included; the real environment wins, and empty values
    are skipped (as in ``.env.example``)."""
    from .settings import load_dotenv

    _DOTENV_ERROR.clear()
    try:
        load_dotenv(path)
    except BridgeError as exc:
        _DOTENV_ERROR.append(exc)


def _show_envvars(group: click.Group) -> None:
    """``--help`` names the environment variable behind each option (``[env var: X]``), for
    every command: scheduled jobs and containers set them rather than flags."""
    commands: list[click.Command] = [group, *group.commands.values()]
    for command in commands:
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True


_show_envvars(main_group)


def main(argv: list[str] | None = None) -> NoReturn:
    _load_dotenv()
    _run(lambda: main_group.main(args=argv, prog_name="teams-bridge", standalone_mode=False))


if __name__ == "__main__":  # pragma: no cover
    main()
