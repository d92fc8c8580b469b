"""The one atomic-write helper: a fresh temporary file per write, removed whatever goes wrong."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from bridge import files
from bridge.errors import BridgeError
from bridge.files import write_set_atomic, write_text_atomic

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_users_own_tmp_file_is_never_touched(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    mine = tmp_path / "snap.json.tmp"
    mine.write_text("my notes")
    write_text_atomic(target, "{}\n")
    assert target.read_text() == "{}\n" and mine.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.json", "snap.json.tmp"]


def test_concurrent_writers_do_not_race_on_one_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        try:
            for _ in range(40):
                write_text_atomic(target, f"writer {n}\n" * 200)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1  # one writer's whole file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_text_utf8_cannot_encode_is_an_error_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "export.yaml"
    with pytest.raises(BridgeError, match=f"cannot write {target}: the text holds characters"):
        write_text_atomic(target, "name: \ud800\n")
    assert list(tmp_path.iterdir()) == []


def test_any_failure_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(files.os, "fsync", broken)
    with pytest.raises(RuntimeError, match="on fire"):
        write_text_atomic(tmp_path / "plan.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_path_is_an_error_with_the_callers_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr(files.os, "replace", no_space)
    target = tmp_path / "drift.json"
    with pytest.raises(BridgeError) as info:
        write_text_atomic(target, b"{}", hint="choose a writable --report-dir")
    assert str(info.value) == (
        f"cannot write {target}: No space left on device; choose a writable --report-dir"
    )  # the temporary file's name is not the user's business
    assert list(tmp_path.iterdir()) == []


@POSIX
def test_modes(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        new = tmp_path / "report.html"
        write_text_atomic(new, "x")
        assert mode(new) == 0o644  # what the umask gives a new file
        new.chmod(0o640)
        write_text_atomic(new, "y")
        assert mode(new) == 0o640  # a rewrite keeps the user's chmod
        new.chmod(0o666)
        write_text_atomic(new, "z")
        assert mode(new) == 0o664  # never world-writable
        private = tmp_path / "plan.json"
        private.write_text("old")
        private.chmod(0o644)
        write_text_atomic(private, "new", private=True)
        assert mode(private) == 0o600
    finally:
        os.umask(umask)


@POSIX
def test_a_symlink_is_replaced_with_a_new_files_mode_not_its_targets(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        elsewhere = tmp_path / "elsewhere.sh"
        elsewhere.write_text("#!/bin/sh\n")
        elsewhere.chmod(0o750)
        link = tmp_path / "drift.html"
        link.symlink_to(elsewhere)
        write_text_atomic(link, "<html>")
        assert not link.is_symlink() and link.read_text() == "<html>"
        assert mode(link) == 0o644  # what a new file gets, not the target's 0750
        assert elsewhere.read_text() == "#!/bin/sh\n" and mode(elsewhere) == 0o750
        # A dangling link too: replaced, nothing created where it pointed.
        dangling = tmp_path / "plan.txt"
        dangling.symlink_to(tmp_path / "nowhere" / "x")
        write_text_atomic(dangling, "p")
        assert dangling.read_text() == "p" and not (tmp_path / "nowhere").exists()
    finally:
        os.umask(umask)


def _set(tmp_path: Path, tag: str) -> list[tuple[Path, str]]:
    return [(tmp_path / name, f"{tag} {name}") for name in ("a.json", "b.html", "c.md")]


def test_a_set_is_written_whole(tmp_path: Path) -> None:
    write_set_atomic(_set(tmp_path, "run1"))
    write_set_atomic(_set(tmp_path, "run2"))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.json": "run2 a.json",
        "b.html": "run2 b.html",
        "c.md": "run2 c.md",
    }


def test_a_set_that_cannot_be_staged_leaves_the_old_set(tmp_path: Path) -> None:
    write_set_atomic(_set(tmp_path, "run1"))
    blocked: list[tuple[Path, str | bytes]] = list(_set(tmp_path, "run2"))
    blocked[1] = (tmp_path / "b.html" / "x", "under a file")  # its directory cannot be made
    with pytest.raises(BridgeError) as info:
        write_set_atomic(blocked)
    assert str(info.value).startswith(f"cannot write {tmp_path / 'b.html' / 'x'}: ")
    assert "(none of the 3 files was replaced)" in str(info.value)
    items: list[tuple[Path, str | bytes]] = list(_set(tmp_path, "run2"))
    items[2] = (tmp_path / "c.md", "bad \ud800")  # the last one cannot be encoded
    with pytest.raises(BridgeError, match=r"c\.md: the text holds characters UTF-8 cannot"):
        write_set_atomic(items)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.json": "run1 a.json",
        "b.html": "run1 b.html",
        "c.md": "run1 c.md",
    }  # and no temporary or backup file is left


def test_a_rename_failing_mid_set_puts_back_the_files_already_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_set_atomic(_set(tmp_path, "run1")[:2])  # c.md is new in run 2
    real_replace = os.replace
    calls: list[str] = []

    def third_fails(src: str, dst: str) -> None:
        calls.append(os.path.basename(dst))
        if len(calls) == 3:
            raise OSError(28, "No space left on device", src)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", third_fails)
    with pytest.raises(BridgeError) as info:
        write_set_atomic(_set(tmp_path, "run2")[::-1], hint="choose a writable --report-dir")
    assert str(info.value) == (
        f"cannot write {tmp_path / 'a.json'}: No space left on device (none of the 3 files was "
        "replaced); choose a writable --report-dir"
    )
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.json": "run1 a.json",
        "b.html": "run1 b.html",
    }  # c.md, new, is gone again; b.html is back from its hard link
