"""A burst of random 0x359 protection and warning bits (issue 18: ~268 error lines in the campaign).

Every edge still reaches the context at once (a protection is a FAULT cause in the next cycle), but
the log lines and alarm events are rate-limited per cause, like malformed frames: one line per flag
and edge per `can.alarm_log_interval_s`, the next one saying how many were held back.
"""

from __future__ import annotations

import random

import structlog

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, State
from interfaces.can.codec import PROTECTIONS, WARNINGS
from tests.helpers.can import BmsTx, can_counters, can_worker, ems_config, virtual_bus, virtual_channel
from tests.helpers.common import wait_for
from tests.helpers.context import make_controller

EDGE_EVENTS = ("bms_protection_raised", "bms_protection_cleared", "bms_warning_raised", "bms_warning_cleared")


def _flags(ctx: EMSContext) -> frozenset[str]:
    f = ctx.snapshot().bms_flags
    return frozenset() if f is None else frozenset(f.protections)


def test_a_burst_of_random_protection_bits_reaches_fault_at_once_but_logs_a_line_per_cause_per_interval() -> None:
    channel = virtual_channel()
    cfg = ems_config(can_cfg={"channel": channel})
    clock = SimClock()  # frozen: the whole burst falls in one interval
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    tx = BmsTx(virtual_bus(channel))
    rng = random.Random(18)
    prot, warn = sorted(PROTECTIONS.values()), sorted(WARNINGS.values())
    with structlog.testing.capture_logs() as logs:
        worker = can_worker(cfg, ctx, clock)
        worker.start()
        try:
            wait_for(lambda: any(t.name == "can" and t.last_beat_s is not None for t in ctx.snapshot().threads), what="worker running")
            tx.send_state()
            wait_for(lambda: can_counters(ctx).get("can_frames_decoded", 0) >= 6, what="the first frame set")
            # the first protection reaches the context (and FAULT) at once
            tx.send(0x359, tx.codec.encode_alarms(protections=frozenset({"over_voltage"}), warnings=frozenset(), modules=2))
            wait_for(lambda: "over_voltage" in _flags(ctx), timeout_s=5, what="over_voltage in the context")
            controller = make_controller(ctx, cfg, clock)
            assert controller.cycle().state is State.FAULT
            assert "bms_protection:over_voltage" in ctx.snapshot().fault_causes
            for _ in range(300):
                p = frozenset(f for f in prot if rng.random() < 0.3)
                w = frozenset(f for f in warn if rng.random() < 0.3)
                tx.send(0x359, tx.codec.encode_alarms(protections=p, warnings=w, modules=2))
            last = frozenset({"system_error"})
            tx.send(0x359, tx.codec.encode_alarms(protections=last, warnings=frozenset(), modules=2))
            wait_for(lambda: _flags(ctx) == last, timeout_s=10, what="the last frame's flags in the context")
            burst = [e for e in logs if e["event"] in EDGE_EVENTS]
            # a line per flag and edge at most (the first over_voltage line included), instead of one per edge
            assert len(burst) <= 2 * (len(prot) + len(warn)), len(burst)
            edges = can_counters(ctx)["can_alarm_edges"]
            assert edges > 10 * len(burst), (edges, len(burst))  # the flood really happened
            n_before = len(burst)
            clock.advance(cfg.can.alarm_log_interval_s + 1.0)
            tx.send_state()  # all clear (and the core frames, so the BMS is heard after the jump in time)
            wait_for(lambda: not _flags(ctx), timeout_s=5, what="flags cleared")
            wait_for(
                lambda: len([e for e in logs if e["event"] in EDGE_EVENTS]) > n_before, timeout_s=5, what="a line again after the interval"
            )
        finally:
            worker.stop()
            tx.bus.shutdown()
    again = [e for e in logs if e["event"] == "bms_protection_cleared" and e.get("flag") == "system_error"][-1]
    assert again["suppressed"] > 0  # says how many edges of that cause were held back
    alarm_events = [e for e in ctx.events.since(0) if e.kind == "alarm"]
    assert len(alarm_events) <= 2 * (len(prot) + len(warn)) + 2
    assert not [e for e in logs if e["event"] == "worker_iteration_failed"]
