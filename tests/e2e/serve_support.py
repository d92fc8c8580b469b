"""``teams-bridge serve`` as a subprocess against a sandbox, its endpoints read over real HTTP,
and a webhook receiver on loopback that records what it is sent."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from e2e_support import Cli
from prometheus_client.parser import text_string_to_metric_families

_URL = re.compile(r" on (http://\S+) ")


class Served:
    def __init__(self, proc: subprocess.Popen[str], timeout: float = 30):
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.url = self._wait_url(timeout)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _wait_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = _URL.search(line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {self.stderr}")

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample: (name, sorted labels without tenant) -> value, by prometheus_client's
        own parser."""
        status, _, text = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "tenant"))
                out[s.name, labels] = s.value
        return out

    def runs(self) -> int:
        return sum(1 for line in self.lines if line.startswith("run "))

    def wait_for(self, what: Callable[[], bool], timeout: float = 30, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {why}: {self.stderr}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@contextmanager
def serving(cli: Cli, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    proc = cli.start("serve", *args, "--listen", "127.0.0.1:0", env=env)
    served = None
    try:
        served = Served(proc)
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


class Receiver:
    """A webhook on loopback: every POST's JSON body is kept in ``posts``."""

    def __init__(self) -> None:
        posts: list[dict[str, Any]] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                posts.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook/s3cr3t-path"

    def events(self) -> list[str]:
        return [p.get("teamsBridgeEvent", "?") for p in self.posts]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
