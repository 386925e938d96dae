"""The cloud command queue (ISSUE 19) against the real reference receiver over HTTPS (trustme), with
the real store (SQLite), writer, sampler and sender threads.

The wall clock runs 300 times faster (a 5-minute window, and so the next batch and its acks, every
real second); the receiver signs commands and checks batch timestamps on the same clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ems.context import EMSContext
from ems.model import Mode
from interfaces.store import Store, StoreSampler, StoreWriter, events
from interfaces.uplink import Sender
from interfaces.uplink.commands import CloudCommands
from interfaces.worker import Worker
from simulators.uplink_receiver import UplinkReceiver
from tests.helpers.common import wait_for
from tests.helpers.uplink import HMAC_KEY, FastWallClock, Tls, make_receiver, make_store, make_tls, store_cfg, uplink_cfg

SITE = "site-c"


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
def clock() -> FastWallClock:
    return FastWallClock(factor=300.0)


@pytest.fixture
def rx(tls: Tls, clock: FastWallClock) -> Iterator[UplinkReceiver]:
    r = make_receiver(tls, clock=lambda: clock.wall().timestamp())
    yield r
    r.close()


@dataclass
class Ems:
    """The EMS's store and uplink threads on one database, with the command queue on."""

    ctx: EMSContext
    store: Store
    threads: list[Worker]

    def stop(self) -> None:
        for t in reversed(self.threads):
            t.stop(timeout_s=5.0)

    def audit(self, seq: int) -> dict[str, Any]:
        self.store.flush_wanted.set()
        rows = wait_for(lambda: [e for e in events(self.store.path, kinds=["audit"]) if e["seq"] == seq], what=f"audit event {seq}")
        return dict(rows[0]["data"])  # type: ignore[arg-type]

    def audits(self) -> list[dict[str, Any]]:
        return [dict(e["data"]) for e in events(self.store.path, kinds=["audit"], newest_first=False)]  # type: ignore[arg-type]


def start_ems(db: Path, rx: UplinkReceiver, tls: Tls, clock: FastWallClock) -> Ems:
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = make_store(store_cfg(db, sample_period_s=0.1, flush_interval_s=0.1, finalize_lag_s=1.0), ctx, site_id=SITE, outbox_enabled=True)
    ctx.requests.set_audit_sink(store.make_durable)  # as build_store_services does: accepted requests are committed first
    cfg = uplink_cfg(rx.url, tls.ca_file, idle_poll_s=0.2, commands={"enabled": True, "poll_s": 0.2})
    commands = CloudCommands(
        cfg=cfg.commands,
        key=HMAC_KEY,
        requests=ctx.requests,
        store=store,
        counters=ctx.counters,
        clock=clock,
        release_mode=Mode.SELF_CONSUMPTION,
        prices_refused="planner.enabled is false",
    )
    sender = Sender(cfg=cfg, store=store, health=ctx.health, events=ctx.events, counters=ctx.counters, clock=clock, commands=commands)
    threads: list[Worker] = [
        StoreWriter(store=store, health=ctx.health, clock=clock),
        StoreSampler(store=store, health=ctx.health, clock=clock),
    ]
    threads.append(sender)
    for t in threads:
        t.start()
    return Ems(ctx, store, threads)


def acked(rx: UplinkReceiver, env: dict[str, Any]) -> dict[str, Any]:
    """Wait until a stored batch carried the command's ack; its queue entry (status done, result, event_seq)."""
    return wait_for(
        lambda: (c := rx.command(env["id"])) is not None and c["status"] == "done" and c, timeout_s=30, what=f"ack of {env['id']}"
    )


def test_an_accepted_command_runs_once_through_the_audited_path_and_is_acked_in_the_next_batch(
    tmp_path: Path, tls: Tls, rx: UplinkReceiver, clock: FastWallClock
) -> None:
    ems = start_ems(tmp_path / "ems.db", rx, tls, clock)
    try:
        env = rx.queue_command(SITE, "setpoint", {"power_w": 1500.0, "ttl_s": 600.0, "reason": "dr-event"})
        mode_env = rx.queue_command(SITE, "mode", {"mode": "DISCHARGE_ONLY"}, issuer="ecowatt-ops")
        done = acked(rx, env)
        mode_done = acked(rx, mode_env)
        assert done["result"] == "accepted" and mode_done["result"] == "accepted"
        mode, sp = ems.ctx.requests.snapshot()
        assert mode is Mode.DISCHARGE_ONLY  # the later command (mode) ran after the set-point, in queue order
        audit = ems.audit(done["event_seq"])
        assert (audit["who"], audit["via"], audit["what"], audit["result"]) == ("cloud:ecowatt", "cloud", "setpoint", "accepted")
        assert audit["new"] == 1500.0 and audit["ttl_s"] == 600.0 and audit["reason"] == "dr-event"
        assert ems.audit(mode_done["event_seq"])["who"] == "cloud:ecowatt-ops"
        # offered on every exchange until its ack arrived, it still ran once
        assert [a["what"] for a in ems.audits() if a["via"] == "cloud" and a["result"] == "accepted"] == ["setpoint", "mode"]
        assert ems.ctx.counters.snapshot().get("uplink_command_redelivered", 0) >= 1
        ack = next(a for a in rx.acks if a["command_id"] == env["id"])
        batch = next(b for b in rx.batches() if b["batch_id"] == ack["batch_id"])
        assert batch["schema"] == "ems.batch/3" and {"command_id", "result", "event_seq"} <= set(batch["acks"][0])
        assert rx.queued(SITE) == []
    finally:
        ems.stop()
    assert sp is None  # DISCHARGE_ONLY dropped the set-point, as over REST


def test_replayed_expired_and_badly_signed_commands_are_refused_audited_and_acked_and_nonces_survive_a_restart(
    tmp_path: Path, tls: Tls, rx: UplinkReceiver, clock: FastWallClock
) -> None:
    db = tmp_path / "ems.db"
    ems = start_ems(db, rx, tls, clock)
    try:
        good = rx.queue_command(SITE, "setpoint", {"power_w": -800.0, "ttl_s": 900.0})
        assert acked(rx, good)["result"] == "accepted"
        now = int(clock.wall().timestamp())
        rx.inject(SITE, good)  # captured and replayed after it ran (same nonce, same signature)
        expired = rx.queue_command(SITE, "mode", {"mode": "IDLE"}, issued_at=now - 1200, ttl_s=600)  # lapsed 600 s ago
        stale = rx.queue_command(SITE, "mode", {"mode": "IDLE"}, issued_at=now - 5 * 3600, ttl_s=86400)  # older than max_age_s
        forged = rx.queue_command(SITE, "mode", {"mode": "IDLE"}, key=b"not-the-site-key")
        tampered = {
            **rx.queue_command("elsewhere", "setpoint", {"power_w": 100.0, "ttl_s": 60.0}),
            "body": {"power_w": 9000.0, "ttl_s": 60.0},
        }
        rx.inject(SITE, tampered)
        results = {k: acked(rx, e) for k, e in (("expired", expired), ("stale", stale), ("forged", forged), ("tampered", tampered))}
        replay = acked(rx, good)
        assert replay["result"] == "replayed" and "nonce already used" in replay["message"]
        assert results["expired"]["result"] == results["stale"]["result"] == "expired"
        assert "expired" in results["expired"]["message"] and "max_age_s" in results["stale"]["message"]
        assert results["forged"]["result"] == results["tampered"]["result"] == "bad_signature"
        mode, sp = ems.ctx.requests.snapshot()
        assert mode is Mode.EXTERNAL and sp is not None and sp.power_w == -800.0  # nothing refused was applied
        for r in (replay, *results.values()):
            a = ems.audit(r["event_seq"])
            assert (
                a["result"] == "refused"
                and a["via"] == "cloud"
                and a["command_id"] in {e["id"] for e in (good, expired, stale, forged, tampered)}
            )
        assert ems.audit(results["forged"]["event_seq"])["who"] == "cloud"  # an unverified issuer is not named
        assert ems.audit(replay["event_seq"])["who"] == "cloud:ecowatt"
    finally:
        ems.stop()

    # a restart: the nonce of the command that ran is still spent
    again = start_ems(db, rx, tls, clock)
    try:
        rx.inject(SITE, good)
        after = acked(rx, good)
        assert after["result"] == "replayed"
        assert again.audit(after["event_seq"])["message"].startswith("replayed")
        assert again.ctx.requests.snapshot()[1] is None  # not applied again in the new process
        accepted = [a for a in again.audits() if a["via"] == "cloud" and a["result"] == "accepted"]
        assert len(accepted) == 1 and accepted[0]["new"] == -800.0  # it ran once, in the first process
    finally:
        again.stop()


def test_a_command_the_context_refuses_is_acked_refused_and_an_unknown_kind_too(
    tmp_path: Path, tls: Tls, rx: UplinkReceiver, clock: FastWallClock
) -> None:
    ems = start_ems(tmp_path / "ems.db", rx, tls, clock)
    try:
        too_long = rx.queue_command(SITE, "setpoint", {"power_w": 500.0, "ttl_s": 999999.0})  # above control.external_max_ttl_s
        prices = rx.queue_command(SITE, "prices", {"start": "2026-03-01T00:00:00+00:00", "prices_eur_per_kwh": [0.1, 0.2]})
        tariff = rx.queue_command(SITE, "tariff", {"import_price": {"kind": "zero"}})
        bad_body = rx.queue_command(SITE, "mode", {"mode": "TURBO"})
        r = {k: acked(rx, e) for k, e in (("ttl", too_long), ("prices", prices), ("tariff", tariff), ("body", bad_body))}
        assert {v["result"] for v in r.values()} == {"refused"}
        assert "ttl_s" in r["ttl"]["message"] and "planner.enabled is false" in r["prices"]["message"]
        assert "tariff is configuration" in r["tariff"]["message"] and "body.mode" in r["body"]["message"]
        assert ems.ctx.requests.snapshot() == (Mode.SELF_CONSUMPTION, None)
        assert all(ems.audit(v["event_seq"])["result"] == "refused" for v in r.values())
    finally:
        ems.stop()
