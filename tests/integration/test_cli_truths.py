"""emsctl as outside clients found it (issue 19): the audit number a write prints is the one `events`
shows, no Python None, `events --follow` over the live stream (at once) or polling where there is
none, tcp://host:port addresses, a derived load STALE when its inputs are."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator

import pytest

from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.cli.fieldbus import parse_host
from interfaces.cli.main import main as emsctl
from interfaces.cli.render import status_text
from tests.helpers.api import TOKENS, RunningApi, api_config, running_api
from tests.helpers.common import wait_for
from tests.helpers.context import feed, publish


@pytest.fixture
def ctx() -> EMSContext:
    return EMSContext(clock=SystemClock(), start_mode=Mode.SELF_CONSUMPTION)


@pytest.fixture
def api(ctx: EMSContext) -> Iterator[RunningApi]:
    with running_api(api_config({"threads": 3}), ctx, ctx.clock) as running:
        yield running


def _run(api: RunningApi, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = emsctl(["--url", api.url, *args], environ={"EMSCTL_TOKEN": TOKENS["operator"]}, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _follow(api: RunningApi, stop: threading.Event, out: io.StringIO, err: io.StringIO, result: list[int]) -> threading.Thread:
    argv = ["--url", api.url, "events", "--follow", "--kind", "audit", "--interval", "30"]  # polling would take 30 s
    t = threading.Thread(target=lambda: result.append(emsctl(argv, environ={}, stdout=out, stderr=err, stop=stop)), daemon=True)
    t.start()
    return t


def test_a_write_prints_no_none_and_the_audit_number_events_follow_shows_at_once(api: RunningApi, ctx: EMSContext) -> None:
    out, err, result, stop = io.StringIO(), io.StringIO(), list[int](), threading.Event()
    t = _follow(api, stop, out, err, result)
    wait_for(lambda: api.server.app.extensions["ems_stream"].open == 1, what="the stream open")
    t0 = time.monotonic()
    rc, text, _ = _run(api, "setpoint", "1500", "--ttl", "60")
    assert rc == 0 and "None" not in text
    assert text.startswith("setpoint accepted: none -> 1500.0 (audit #")
    number = re.search(r"audit #(\d+)", text).group(1)  # type: ignore[union-attr]
    wait_for(lambda: f"#{number} " in out.getvalue(), timeout_s=5, what="the audit event on the stream")
    assert time.monotonic() - t0 < 3.0  # at once: not after a 30-s poll nor the store's flush
    line = next(ln for ln in out.getvalue().splitlines() if f"#{number} " in ln)
    assert "what=setpoint" in line and "old=none" in line and "None" not in line
    stop.set()
    t.join(10)
    assert result == [0], err.getvalue()


def test_events_follow_polls_when_the_stream_is_not_available(ctx: EMSContext) -> None:
    with running_api(api_config({"threads": 2, "stream_max_clients": 0}), ctx, ctx.clock) as api:
        out, err, result, stop = io.StringIO(), io.StringIO(), list[int](), threading.Event()
        argv = ["--url", api.url, "events", "--follow", "--kind", "audit", "--interval", "0.1"]
        t = threading.Thread(target=lambda: result.append(emsctl(argv, environ={}, stdout=out, stderr=err, stop=stop)), daemon=True)
        t.start()
        ctx.requests.request_mode(Mode.IDLE, who="op", via="rest")
        wait_for(lambda: "new=IDLE" in out.getvalue(), timeout_s=10, what="the polled audit event")
        stop.set()
        t.join(10)
    assert result == [0], err.getvalue()


def test_status_marks_a_derived_load_stale_when_its_inputs_are(api: RunningApi, ctx: EMSContext) -> None:
    feed(ctx, {Quantity.GRID_POWER_W: 800.0, Quantity.ESS_POWER_W: -300.0, Quantity.SOC_PCT: 50.0}, at_s=ctx.clock.monotonic() - 10)
    publish(ctx, seq=1, setpoint_w=0.0, written_w=0.0)
    rc, text, _ = _run(api, "status")
    assert rc == 0 and re.search(r"load 500 W STALE 1\d s", text), text
    s = api.get("/api/v1/status").json()
    for r in s["measurements"].values():
        r["stale"], r["age_s"] = False, 0.2
    assert "load 500 W" in status_text(s) and "load 500 W STALE" not in status_text(s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:15020", ("127.0.0.1", 15020)),
        ("tcp://127.0.0.1:15021 unit 2", ("127.0.0.1", 15021)),  # as /api/v1/devices and the log print it
        ("192.168.1.10", ("192.168.1.10", 502)),
        ("rtu:///dev/ttyUSB0@9600", ("/dev/ttyUSB0", 0)),
        ("/dev/ttyUSB0", ("/dev/ttyUSB0", 0)),
    ],
)
def test_modbus_addresses_take_the_form_the_log_prints(text: str, expected: tuple[str, int]) -> None:
    assert parse_host(text) == expected
