"""Uplink against a real HTTPS receiver on 127.0.0.1 with a trustme test CA.

Store and sender run either as real threads (with a fast wall clock) or step by step in
simulated time (days pass without sleeping)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.store import StoreSampler, StoreWriter, events, outbox_status
from interfaces.uplink import sign
from interfaces.uplink.transport import HttpsTransport
from interfaces.worker import Worker
from simulators.uplink_receiver import UplinkReceiver
from tests.helpers.common import PYTHON, REPO_ROOT, wait_for
from tests.helpers.uplink import (
    HMAC_KEY,
    TOKEN,
    FastWallClock,
    SimSite,
    Tls,
    make_receiver,
    make_sender,
    make_store,
    make_tls,
    store_cfg,
    uplink_cfg,
)

DAY_S = 86400.0


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
def site(tmp_path: Path, tls: Tls) -> Iterator[SimSite]:
    s = SimSite(tmp_path / "ems.db", uplink=uplink_cfg("https://127.0.0.1:1/api/v1/batches", tls.ca_file))
    yield s
    s.store.close()


def _attach(site: SimSite, rx: UplinkReceiver) -> None:
    assert site.sender is not None and isinstance(site.sender.transport, HttpsTransport)
    site.sender.cfg = site.sender.transport.cfg = site.sender.cfg.model_copy(update={"url": rx.url})


def _windows(batches: list[dict[str, object]]) -> list[int]:
    return [int(b["window_start_ts"]) for b in batches]  # type: ignore[call-overload]


def test_batches_arrive_signed_compressed_in_order_once_with_real_threads(tmp_path: Path, tls: Tls) -> None:
    clock = FastWallClock(factor=300.0)  # a 5-minute window closes every real second
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    rx = make_receiver(tls, clock=lambda: clock.wall().timestamp())
    store = make_store(
        store_cfg(tmp_path / "ems.db", sample_period_s=0.1, flush_interval_s=0.1, finalize_lag_s=1.0),
        ctx,
        site_id="site-a",
        outbox_enabled=True,
    )
    threads: list[Worker] = [
        StoreWriter(store=store, health=ctx.health, clock=clock),
        StoreSampler(store=store, health=ctx.health, clock=clock),
    ]
    threads.append(make_sender(uplink_cfg(rx.url, tls.ca_file, idle_poll_s=0.2), store, ctx))
    meter = ctx.readings.claim("test", [Quantity.GRID_POWER_W, Quantity.SOC_PCT])
    feeding = True

    def feed() -> int:
        if feeding:
            meter.update({Quantity.GRID_POWER_W: 1200.0, Quantity.SOC_PCT: 55.0}, at_s=clock.monotonic())
        return len(rx.batch_ids())

    try:
        for t in threads:
            t.start()
        wait_for(lambda: feed() >= 3, timeout_s=30, what="three batches at the receiver")
        feeding = False
    finally:
        for t in reversed(threads):
            t.stop(timeout_s=5.0)
        rx.stop()
    batches = rx.batches()
    assert rx.counts["stored"] == len(batches) and rx.counts["duplicate"] == 0
    assert not [k for k in rx.counts if k.startswith("rejected")], rx.counts  # every signature and timestamp verified
    assert _windows(batches) == sorted(set(_windows(batches)))  # in order, each once
    assert all(
        b["site_id"] == "site-a" and b["batch_id"].startswith(f"site-a:{store.installation_id}:{b['window_start']}:") for b in batches
    )
    full = [b for b in batches if b["samples"] and b["minutes"] == 5]
    assert full and all(b["fields"]["grid_power_w"]["mean"] == 1200.0 for b in full)  # type: ignore[index]
    uplink = ctx.snapshot().device("uplink")
    assert uplink is not None and uplink.info["link"] == "up"


def test_a_failing_receiver_loses_nothing_and_retry_after_is_honoured(site: SimSite, tls: Tls) -> None:
    rx = make_receiver(tls, clock=site.receiver_clock)
    _attach(site, rx)
    try:
        site.run(900, pump=False)  # three windows closed, nothing sent yet
        rx.fail_next(500, count=3)
        rx.fail_next(429, retry_after="120")
        for _ in range(4):  # 500, 500, 500, 429: each retried after the backoff
            assert site.sender is not None
            assert site.sender.pump() == "retry"
            site.clock.advance(site.sender.next_try_in_s)
        assert site.sender.next_try_in_s == 0.0
        assert rx.counts["scripted"] == 4 and rx.batch_ids() == []
        # after the 429 the sender waited the full Retry-After before the next try
        rx.fail_next(429, retry_after="120")
        assert site.sender.pump() == "retry"
        site.clock.advance(119)
        assert site.sender.pump() == "waiting"
        site.clock.advance(1)
        site.drain()
    finally:
        rx.stop()
    assert rx.batch_ids() == site.outbox_ids()
    assert len(rx.batch_ids()) >= 3 and rx.counts["duplicate"] == 0
    assert site.pending() == 0 and site.ctx.snapshot().counters["uplink_failures"] == 5


def test_three_days_offline_then_every_batch_arrives_once_in_order(tmp_path: Path, site: SimSite, tls: Tls) -> None:
    rx = make_receiver(tls, clock=site.receiver_clock)
    _attach(site, rx)
    site.run(3600)  # one hour online
    online = rx.batch_ids()
    assert len(online) >= 11
    port = rx.port
    rx.stop()  # the receiver goes away: connection refused for 3 days
    site.run(3 * DAY_S, sample_every_s=30.0, flush_every_s=300.0)
    assert site.sender is not None and site.sender.next_try_in_s <= 600.0 + 1.0  # backoff capped at backoff_max_s
    status = outbox_status(site.store.path, now_ts=site.clock.wall().timestamp())
    assert status.depth >= 3 * 288 - 1 and status.oldest_pending_age_s is not None and status.oldest_pending_age_s > 2.9 * DAY_S
    assert rx.batch_ids() == online
    rx.port = port
    rx.start()  # back on the same port
    site.drain()
    rx.stop()
    ids = rx.batch_ids()
    assert ids == site.outbox_ids() == site.outbox_ids("delivered")
    assert len(ids) == len(set(ids)) >= 12 + 3 * 288 - 1
    assert _windows(rx.batches()) == sorted(_windows(rx.batches()))


def test_a_wrong_ca_fails_tls_and_nothing_is_marked_delivered(tmp_path: Path, tls: Tls) -> None:
    site = SimSite(tmp_path / "ems.db", uplink=uplink_cfg("https://127.0.0.1:1/api/v1/batches", tls.other_ca_file))
    rx = make_receiver(tls, clock=site.receiver_clock)
    _attach(site, rx)
    try:
        site.run(1800)
        site.store.flush()
        assert rx.batch_ids() == [] and rx.counts["stored"] == 0 and rx.counts["tls_error"] >= 1
        assert site.outbox_ids("delivered") == [] and len(site.outbox_ids("pending")) >= 5
        assert "retry" in site.outcomes and "delivered" not in site.outcomes
    finally:
        rx.stop()
        site.store.close()


def test_a_refused_batch_is_parked_with_an_event_and_the_next_goes_on(site: SimSite, tls: Tls) -> None:
    rx = make_receiver(tls, clock=site.receiver_clock)
    _attach(site, rx)
    try:
        site.run(900, pump=False)
        rx.fail_next(400)
        site.drain()
    finally:
        rx.stop()
    parked, delivered = site.outbox_ids("parked"), site.outbox_ids("delivered")
    assert len(parked) == 1 and parked[0] == site.outbox_ids()[0]
    assert rx.batch_ids() == delivered == site.outbox_ids()[1:]
    site.store.flush()
    ev = events(site.store.path, kinds=["uplink_parked"])
    assert [e["data"]["batch_id"] for e in ev] == parked  # type: ignore[index]
    assert ev[0]["data"]["http_status"] == 400  # type: ignore[index]


def test_the_receiver_checks_token_signature_timestamp_and_drops_duplicates(tls: Tls) -> None:
    rx = make_receiver(tls)
    body = gzip.compress(json.dumps({"batch_id": "s:1", "window_start_ts": 0}).encode())

    def post(*, token: str = TOKEN, ts: int | None = None, key: bytes = HMAC_KEY, data: bytes = body) -> requests.Response:
        t = str(int(time.time()) if ts is None else ts)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-EMS-Timestamp": t,
            "X-EMS-Signature": sign(key, t, data),
            "Content-Encoding": "gzip",
        }
        return requests.post(rx.url, data=data, headers=headers, verify=str(tls.ca_file), timeout=5)

    try:
        assert post(token="wrong").status_code == 401
        assert post(key=b"wrong").status_code == 401
        assert post(ts=int(time.time()) - 3600).status_code == 401
        assert post(data=b"not gzip").status_code == 400
        first, again = post(), post()
        assert (first.status_code, first.json()["status"]) == (200, "stored")
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    finally:
        rx.stop()
    assert rx.batch_ids() == ["s:1"]
    assert rx.counts["rejected:bad_token"] == rx.counts["rejected:bad_signature"] == rx.counts["rejected:stale_timestamp"] == 1


def test_the_receiver_runs_as_a_program_with_its_own_test_ca(tmp_path: Path) -> None:
    env = {**os.environ, "EMS_UPLINK_TOKEN": TOKEN, "EMS_UPLINK_HMAC_KEY": HMAC_KEY.decode()}
    args = ["-m", "simulators.uplink_receiver", "--port", "0", "--tls-dir", str(tmp_path / "tls"), "--db", str(tmp_path / "rx.db")]
    proc = subprocess.Popen([PYTHON, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        body = gzip.compress(json.dumps({"batch_id": "p:1"}).encode())
        ts = str(int(time.time()))
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "X-EMS-Timestamp": ts,
            "X-EMS-Signature": sign(HMAC_KEY, ts, body),
            "Content-Encoding": "gzip",
        }
        resp = requests.post(url, data=body, headers=headers, verify=str(tmp_path / "tls" / "ca.pem"), timeout=5)
        assert (resp.status_code, resp.json()["status"]) == (200, "stored")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    stored = sqlite3.connect(tmp_path / "rx.db").execute("SELECT batch_id FROM received").fetchall()
    assert stored == [("p:1",)]


def test_without_a_ca_file_the_system_cas_are_used_and_a_test_ca_is_refused(tmp_path: Path, tls: Tls) -> None:
    site = SimSite(tmp_path / "ems.db", uplink=uplink_cfg("https://127.0.0.1:1/api/v1/batches", None))
    rx = make_receiver(tls, clock=site.receiver_clock)
    _attach(site, rx)
    try:
        site.run(600)
        assert rx.counts["tls_error"] >= 1 and rx.batch_ids() == [] and "delivered" not in site.outcomes
    finally:
        rx.stop()
        site.store.close()
