"""Session.read: what a command needs is part of the read (the tenant's domains for a domain
``tenant:`` guard, every group's members for a snapshot), not patched in by each caller."""

from __future__ import annotations

from factories import TENANT, tenant

from bridge.backends.snapshot import write_snapshot
from bridge.session import Session, SessionOptions
from bridge.state import DesiredState


def snapshot_session(tmp_path, domains=("northwind-health.org",)):
    state = tenant(members={1: [1, 2]})
    state.domains = tuple(domains)
    path = tmp_path / "snap.json"
    write_snapshot(state, path, "test")
    return Session(SessionOptions(snapshot=str(path)))


class Counting(Session):
    def __init__(self, inner: Session) -> None:
        super().__init__(inner.options)
        self.asked = 0

    def tenant_domains(self) -> tuple[str, ...]:
        self.asked += 1
        return ("asked.example",)


def test_a_domain_guard_reads_the_domains_with_the_tenant(tmp_path):
    session = Counting(snapshot_session(tmp_path, domains=()))
    guarded = DesiredState(tenant="northwind-health.org")
    assert session.read(guarded).domains == ("asked.example",)
    # A tenant id guards without domains, and so does no guard: nothing more is read.
    assert session.read(DesiredState(tenant=TENANT)).domains == ()
    assert session.read(DesiredState()).domains == ()
    assert session.asked == 1


def test_domains_the_source_gave_are_not_read_again(tmp_path):
    session = Counting(snapshot_session(tmp_path))
    state = session.read(DesiredState(tenant="northwind-health.org"), domains=True)
    assert state.domains == ("northwind-health.org",) and session.asked == 0


def test_the_tenants_name_is_read_beside_the_tenant_not_after_it(tmp_path):
    """The organization request runs while the read's user-page chain does: after it, it
    would add a round trip to every plan, apply and drift."""
    import threading

    session = snapshot_session(tmp_path)
    backend = session.backend()
    asked = threading.Event()
    read = backend.read
    organization = backend.organization

    def read_waiting_for_the_name(wanted):
        assert asked.wait(5), "the organization was not asked for while the tenant was read"
        return read(wanted)

    def name():
        asked.set()
        return organization()

    backend.read = read_waiting_for_the_name  # type: ignore[method-assign]
    backend.organization = name  # type: ignore[method-assign]
    state = session.read(DesiredState(), organization=True)
    assert asked.is_set() and state.directory.users
