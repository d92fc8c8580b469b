"""Where the pieces meet: the source of current state for one run (a snapshot file, the
in-process sandbox, or a tenant through a transport), built once and closed once.

The CLI builds a ``Session`` from its global options and hands it to the command functions in
``bridge.commands``; nothing here prints.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Wanted
from .backends.snapshot import MemoryBackend, load_snapshot
from .errors import ConfigError
from .state import DesiredState, Group, TenantState, is_guid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    sandbox: bool = False
    sandbox_users: int = 2000
    sandbox_seed: int = 7
    snapshot: str | None = None
    transport: str = "rest"
    cloud: str | None = None


# Shows that a long step is under way: (what, a function counting requests so far) -> a context.
Activity = Callable[[str, Callable[[], int]], AbstractContextManager[None]]


class Session:
    def __init__(
        self,
        options: SessionOptions,
        prompt: Callable[[str], None] | None = None,
        activity: Activity | None = None,
        settings: Any = None,
    ):
        """``settings``: this session's ``Settings``, built by the caller (a fleet builds one per
        tenant); None: from the environment and ``.env``, when first needed."""
        if options.sandbox and options.snapshot:
            raise ConfigError("--sandbox and --snapshot both name a source of state: pick one")
        self.options = options
        self.prompt = prompt  # shows device-code sign-in instructions (the CLI prints them)
        self.activity = activity
        self._backend: Backend | None = None
        self._sandbox: Any = None
        self.settings: Any = settings
        self.token_provider: Any = None
        self.http: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None

    @property
    def source(self) -> str:
        if self.options.snapshot:
            return f"snapshot {self.options.snapshot}"
        if self.options.sandbox:
            return "sandbox"
        return f"tenant via {self.options.transport}"

    @property
    def is_offline(self) -> bool:
        return bool(self.options.snapshot)

    # ------------------------------------------------------------------ building

    def _load_settings(self, overrides: dict[str, str] | None = None) -> Any:
        from .settings import Settings

        extra: dict[str, str] = dict(overrides or {})
        if self.options.cloud:
            extra["BRIDGE_CLOUD"] = self.options.cloud
        return Settings.load(env_file=None if overrides else ".env", overrides=extra or None)

    def backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        if self.options.snapshot:
            state = load_snapshot(self.options.snapshot)
            self._backend = MemoryBackend(state, read_only=True, source=self.options.snapshot)
            return self._backend
        overrides = None
        if self.options.sandbox:
            from .sandbox import Sandbox, SandboxConfig

            self._sandbox = Sandbox(
                SandboxConfig(users=self.options.sandbox_users, seed=self.options.sandbox_seed)
            )
            self._sandbox.start()
            overrides = self._sandbox.env()
            log.info("sandbox tenant serving at %s", self._sandbox.base_url)
        from .auth import build_token_provider
        from .backends import make_backend

        if self.settings is None or overrides is not None:
            self.settings = self._load_settings(overrides)
        self.token_provider = build_token_provider(self.settings, prompt=self.prompt)
        self._backend = make_backend(self.options.transport, self.settings, self.token_provider)
        return self._backend

    def read(
        self,
        desired: DesiredState | None = None,
        attributes: Sequence[str] = (),
        *,
        domains: bool | None = None,
        all_members: bool = False,
        organization: bool = False,
    ) -> TenantState:
        """The tenant's whole current state, with the names ``desired`` uses resolved and the
        user attributes its roles and rules use (or ``attributes``) read with the directory.

        ``domains``: with the tenant's verified domains when the source did not give them (None:
        when ``desired`` guards with a domain ``tenant:``). ``all_members``: with the members of
        every group (a snapshot's groups, for an offline ``explain``). ``organization``: with the
        tenant's display name and default domain (one Graph request; from the snapshot offline),
        for what people read: plan, apply's prompt, the reports. What a read needs is read here,
        not patched into the state by each caller afterwards."""
        wanted = Wanted(attributes=tuple(attributes))
        if desired is not None:
            wanted = Wanted(
                groups=tuple(dict.fromkeys(desired.group_refs())),
                users=tuple(u for u in desired.user_refs()),
                attributes=tuple(dict.fromkeys([*desired.user_attributes(), *attributes])),
            )
        backend = self.backend()
        with ThreadPoolExecutor(1, thread_name_prefix="bridge-organization") as pool:
            # The tenant's name comes in one request beside the read, not after it: the read's
            # user pages are a chain of round trips, and this one would add another.
            named = (
                pool.submit(contextvars.copy_context().run, backend.organization)
                if organization
                else None
            )
            try:
                if self.activity is None:
                    state = backend.read(wanted)
                else:
                    with self.activity("reading the tenant", self._request_count):
                        state = backend.read(wanted)
            except BaseException:
                if named is not None:
                    named.cancel()
                raise
            org = named.result() if named is not None else None
        if domains is None:
            guard = desired.tenant if desired is not None else None
            domains = bool(guard) and not is_guid(guard or "")
        if state.display_name is None and org is not None:
            state.display_name = org.display_name or None
            state.default_domain = org.default_domain
            state.domains = state.domains or tuple(org.verified_domains)
        if domains and not state.domains:
            state.domains = self.tenant_domains()
        if all_members:
            self.fill_group_members(state, state.directory.groups)
        return state

    def _request_count(self) -> int:
        return int(self.request_stats().get("total", 0))

    def fill_group_members(self, state: TenantState, group_ids: Iterable[str]) -> None:
        """Read the direct members of ``group_ids`` into ``state.directory`` (those not read
        yet). Groups are read side by side, ``BRIDGE_CONCURRENCY`` at a time within the
        pacer; each group's pages stay a sequential chain. A failed read fails the whole call
        (after the reads under way end), never a group taken as empty."""
        backend = self.backend()
        todo = []
        for gid in sorted(set(group_ids)):
            group = state.directory.groups.get(gid)
            # A group first assigned by a saved plan was never looked up by name: its members
            # must count all the same.
            if group is None or group.members is None:
                todo.append(gid)
        if not todo:
            return
        concurrency = int(getattr(self.settings, "concurrency", 1) or 1)
        workers = min(concurrency, len(todo))
        if workers <= 1:
            read = [tuple(backend.group_members(gid)) for gid in todo]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="bridge-members") as pool:
                # Each in the caller's context: a fleet tenant's request observers count them.
                futures = [
                    pool.submit(contextvars.copy_context().run, backend.group_members, gid)
                    for gid in todo
                ]
                wait(futures, return_when=FIRST_EXCEPTION)
                for f in futures:  # after a failure, the groups not started are not read
                    f.cancel()
            failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]  # the first, in group order
            read = [tuple(f.result()) for f in futures]
        for gid, members in zip(todo, read, strict=True):
            group = state.directory.groups.get(gid)
            name = group.display_name if group else gid
            state.directory.add_group(Group(gid, name, members))

    def token_tenant_id(self) -> str | None:
        """The tenant id (``tid``) in the Teams admin API token: the tenant actually reached."""
        from .auth import TEAMS_RESOURCE, decode_claims

        self.backend()
        if self.token_provider is None:
            return None
        tid = decode_claims(self.token_provider.get_token(TEAMS_RESOURCE)).get("tid")
        return str(tid).casefold() if tid else None

    def token_app_id(self) -> str | None:
        """The app id (``appid``/``azp``) in the Teams admin API token: which app registration
        acts (never the secret); None offline."""
        from .auth import TEAMS_RESOURCE, decode_claims
        from .runby import app_id_of

        self.backend()
        if self.token_provider is None:
            return None
        return app_id_of(decode_claims(self.token_provider.get_token(TEAMS_RESOURCE)))

    def tenant_domains(self) -> tuple[str, ...]:
        """The tenant's verified domains (for a domain ``tenant:`` guard); empty when the source
        cannot tell (a snapshot without them)."""
        return self.backend().domains()

    def request_stats(self) -> dict[str, Any]:
        """Requests made so far by route, when the backend talks HTTP."""
        return self._backend.request_stats() if self._backend is not None else {}


def tenant_matches(guard: str, tenant_id: str | None, domains: list[str] | None = None) -> bool:
    """Whether the desired file's ``tenant:`` guard names this tenant (an id or a domain)."""
    if tenant_id is None:
        return False
    if is_guid(guard):
        return guard.casefold() == tenant_id.casefold()
    return guard.casefold() in {d.casefold() for d in (domains or [])}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
