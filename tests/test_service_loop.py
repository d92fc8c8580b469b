"""The reconcile loop with an injected clock and fake runs: schedule (jitter, back-off), one run
at a time, the time-out and stopping between requests and between apply steps, health and
readiness, metrics, and notifications once per state change."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import http
from bridge.errors import ConfigError, ServerError
from bridge.service import ServiceConfig, ServiceLoop, ServiceMetrics, parse_duration, parse_listen
from bridge.service.loop import RunCancelled, RunGuard, RunRecord


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def make_loop(
    runs: list[Any], *, mode: str = "drift", notify: bool = False, **config: Any
) -> tuple[ServiceLoop, FakeTime, list[dict[str, Any]]]:
    """A loop whose runs are ``runs`` in turn: a RunRecord, an exception, or a function of the
    guard returning one."""
    t = FakeTime()
    posts: list[dict[str, Any]] = []
    todo = list(runs)

    def reconcile(guard: RunGuard) -> RunRecord:
        step = todo.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step(guard) if callable(step) else step

    loop = ServiceLoop(
        ServiceConfig("desired.yaml", mode=mode, interval=60.0,
                      notify_url="http://127.0.0.1:9/hook" if notify else None, **config),
        reconcile,
        ServiceMetrics("t1"),
        poster=lambda url, payload, headers: posts.append(payload),
        clock=t.clock,
        wall=lambda: 1.7e9 + t.now,
        rand=lambda: 0.5,  # no jitter
        wait=t.wait,
    )  # fmt: skip
    return loop, t, posts


def samples(loop: ServiceLoop) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = loop.metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("30", 30), ("2.5m", 150)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15 minutes", "-5s", "0s", "inf", "nan", "9999h", "1d"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--interval"):
        parse_duration(text)


def test_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", ":80", "host:99999", "host:http"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_listen(bad)


def test_jitter_stays_within_ten_percent_and_back_off_doubles_up_to_the_interval() -> None:
    loop, _, _ = make_loop([])
    loop._rand = lambda: 0.0
    assert loop.next_delay() == pytest.approx(54.0)
    loop._rand = lambda: 1.0
    assert loop.next_delay() == pytest.approx(66.0)
    loop._rand = lambda: 0.5
    delays = []
    for failures in range(1, 6):
        loop.failures = failures
        delays.append(loop.next_delay())
    assert delays == [30.0, 60.0, 60.0, 60.0, 60.0]
    loop.config = ServiceConfig("d.yaml", interval=3600.0)
    loop.failures = 4
    assert loop.next_delay() == 240.0


def test_runs_one_at_a_time_on_schedule_and_backs_off_while_failing() -> None:
    running = threading.Semaphore(1)

    def run(result: str, seconds: float) -> Any:
        def step(guard: RunGuard) -> RunRecord:
            assert running.acquire(blocking=False), "two runs at once"
            t.now += seconds
            running.release()
            return RunRecord("drift", result)

        return step

    fail = ServerError("could not reach Teams admin API")
    loop, t, _ = make_loop([run("drift", 5), fail, fail, fail, run("in_sync", 1), run("drift", 1)])
    loop.run_forever(max_runs=6)
    # The next run starts an interval after the last one started; after failures sooner.
    assert t.waits == [55.0, 30.0, 60.0, 60.0, 59.0]
    assert loop.runs == 6 and loop.failures == 0
    m = samples(loop)
    assert (
        m["teams_bridge_runs_total", (("mode", "drift"), ("result", "error"), ("tenant", "t1"))]
        == 3
    )
    assert (
        m["teams_bridge_runs_total", (("mode", "drift"), ("result", "drift"), ("tenant", "t1"))]
        == 2
    )
    assert m["teams_bridge_run_duration_seconds_count", (("mode", "drift"), ("tenant", "t1"))] == 6


def test_health_and_readiness() -> None:
    loop, t, _ = make_loop([ServerError("down"), RunRecord("drift", "drift")])
    assert loop.healthy() and not loop.ready()
    loop.run_once()
    assert loop.healthy() and not loop.ready()  # a failed run: alive, not ready
    loop.run_once()
    assert loop.ready()
    t.now += 2 * 60 + 600  # two intervals plus the run time-out: still alive
    assert loop.healthy()
    t.now += 1  # no run started since: the loop is stuck
    assert not loop.healthy()


def test_a_run_over_its_time_out_stops_at_the_next_request_and_counts_as_an_error() -> None:
    def slow(guard: RunGuard) -> RunRecord:
        guard.before("teams")  # within the time-out: goes ahead
        t.now += 31
        guard.before("teams")  # past it: stopped here
        raise AssertionError("not reached")

    loop, t, _ = make_loop([slow], run_timeout=30.0)
    record = loop.run_once()
    assert record is not None and record.result == "error"
    assert "time-out (30s)" in str(record.message)
    assert not loop.ready()


def test_apply_writes_are_not_cut_mid_step_only_between_steps() -> None:
    sent: list[str] = []

    def apply(guard: RunGuard) -> RunRecord:
        guard.before("teams")  # the read
        guard.progress("update policy A")
        loop.stop()  # SIGTERM while the first step writes
        guard.before("teams")  # the write under way goes out
        sent.append("A")
        guard.progress("update policy B")  # the next step: stopped before it
        sent.append("B")
        raise AssertionError("not reached")

    loop, _, _ = make_loop([apply], mode="apply")
    assert loop.run_once() is None  # stopped: not counted as a run
    assert sent == ["A"]
    loop.run_forever()
    assert loop.runs == 0 and not loop.healthy()


def test_the_guard_cancels_through_bridge_http_observers() -> None:
    guard = RunGuard(lambda: 0.0)
    guard.stopping.set()
    http.add_observer(guard)
    try:
        with pytest.raises(RunCancelled, match="stopping"):
            http.observe_before("graph")
    finally:
        http.remove_observer(guard)
    http.observe_before("graph")  # removed: nothing raises


def test_metrics_count_requests_and_throttles_by_api() -> None:
    metrics = ServiceMetrics("t1")
    http.add_observer(metrics)
    try:
        http.observe_done("teams", 200)
        http.observe_done("teams", 429)
        http.observe_done("login", None)
    finally:
        http.remove_observer(metrics)
    loop, _, _ = make_loop([])
    loop.metrics = metrics
    m = samples(loop)
    assert (
        m[
            "teams_bridge_api_requests_total",
            (("api", "teams"), ("status", "200"), ("tenant", "t1")),
        ]
        == 1
    )
    assert (
        m[
            "teams_bridge_api_requests_total",
            (("api", "teams"), ("status", "429"), ("tenant", "t1")),
        ]
        == 1
    )
    assert (
        m[
            "teams_bridge_api_requests_total",
            (("api", "login"), ("status", "error"), ("tenant", "t1")),
        ]
        == 1
    )
    assert m["teams_bridge_api_throttled_total", (("api", "teams"), ("tenant", "t1"))] == 1
    assert m["teams_bridge_api_throttled_total", (("api", "graph"), ("tenant", "t1"))] == 0


def test_notifications_go_out_once_per_state_change() -> None:
    fail = ServerError("503 from Teams admin API")
    refused = RunRecord("apply", "refused", message="the plan is over a safety limit")
    loop, _, posts = make_loop(
        [fail, fail, refused, refused, RunRecord("apply", "in_sync"), fail, fail], notify=True
    )
    for _ in range(7):
        loop.run_once()
    assert [p["teamsBridgeEvent"] for p in posts] == ["failing", "refused", "failing"]
    assert "503" in posts[0]["teamsBridgeSummary"]["message"]


def test_a_failed_post_is_tried_again_after_the_next_run() -> None:
    fail = ServerError("down")
    loop, _, _ = make_loop([fail, fail, fail], notify=True)
    tries = []

    def flaky(url: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        tries.append(payload["teamsBridgeEvent"])
        if len(tries) == 1:
            raise ServerError("webhook down")

    loop._poster = flaky
    for _ in range(3):
        loop.run_once()
    assert tries == ["failing", "failing"]  # retried once after the failed post, then quiet


def test_an_unexpected_exception_is_an_error_run_and_the_loop_goes_on() -> None:
    loop, _, _ = make_loop([ValueError("bug"), RunRecord("drift", "in_sync")])
    loop.run_forever(max_runs=2)
    assert loop.runs == 2 and loop.last is not None and loop.last.result == "in_sync"


def test_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match="--mode"):
        make_loop([], mode="fix")


def test_loading_the_desired_file_again_and_again_keeps_no_memory() -> None:
    """serve loads the file on every run: the YAML loader must not remember its nodes (the soak
    benchmark found the shared constructor's memo growing by ~50 entries a run)."""
    from pathlib import Path

    from bridge import yamlloc
    from bridge.desired import load_desired

    northwind = Path(__file__).resolve().parents[1] / "examples" / "northwind.yaml"
    for _ in range(3):
        load_desired(str(northwind))
    assert len(yamlloc._constructor.constructed_objects) == 0


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from bridge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--interval", "5x"], "--interval '5x': not a duration"),
        (["--run-timeout", "0s"], "--run-timeout '0s': must be between"),
        (["--listen", "nohost"], "--listen 'nohost': give HOST:PORT"),
        (["--notify", "http://example.org/hook"], "plain http"),
    ],
)
def test_serve_refuses_bad_options_before_starting(
    capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    from pathlib import Path

    northwind = Path(__file__).resolve().parents[1] / "examples" / "northwind.yaml"
    code, err = _cli(capsys, "--sandbox", "serve", str(northwind), *args)
    assert code == 1
    assert said in err and "Traceback" not in err


def test_serve_refuses_an_invalid_desired_file_before_listening(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  Global:\n    AllowGiphys: true\n")
    code, err = _cli(capsys, "--sandbox", "serve", str(bad))
    assert code == 1
    assert "bad.yaml:3:5" in err and "AllowGiphy" in err
    assert "serving" not in err


def test_the_endpoints_answer_as_the_contract_says() -> None:
    import http.client

    from bridge.service import StatusServer

    loop, _, _ = make_loop([RunRecord("drift", "in_sync")])
    server = StatusServer(loop, "127.0.0.1", 0).start()
    host, port = server.address

    def ask(method: str, path: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, r.getheader("Content-Type") or "", body

    try:
        assert ask("GET", "/healthz")[0] == 200
        assert ask("GET", "/readyz")[0] == 503
        assert ask("GET", "/report")[0] == 404
        assert ask("GET", "/report.json")[0] == 404
        status, kind, body = ask("GET", "/nope")
        assert status == 404 and b"/metrics" in body
        status, kind, body = ask("HEAD", "/metrics")
        assert status == 200 and kind.startswith("text/plain") and body == b""
        assert ask("POST", "/metrics")[0] == 501  # nothing here changes anything
    finally:
        server.close()
