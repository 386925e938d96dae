"""CAN test helpers: a unique python-can virtual bus per test, a CAN worker wired as main.py wires it,
the BMS device's health info, and a tester node that sends BMS frames."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import can

from config import EMSConfig, parse_config
from ems.clock import Clock
from ems.context import EMSContext
from interfaces.can.codec import Codec
from interfaces.can.worker import DEVICE, CanWorker

__all__ = ["BMS_SOURCES", "BmsTx", "bms_info", "can_counters", "can_worker", "ems_config", "virtual_bus", "virtual_channel"]

BMS_SOURCES = ["grid_power_w", "ess_power_w", "soc_pct", "bms_voltage_v", "bms_ccl_a", "bms_dcl_a"]


def virtual_channel() -> str:
    return f"ems-test-{uuid.uuid4().hex[:12]}"


def virtual_bus(channel: str) -> can.BusABC:
    return can.Bus(interface="virtual", channel=channel, receive_own_messages=False)


def ems_config(*, can_cfg: dict[str, Any] | None = None, control: dict[str, Any] | None = None) -> EMSConfig:
    """Live control, CAN on, BMS fields required (as docs/can.md asks for)."""
    ctl = {"enabled": True, "dry_run": False, "required_sources": BMS_SOURCES, "ramp_w_per_s": None} | (control or {})
    return parse_config({"control": ctl, "can": {"enabled": True, "interface": "virtual", "receive_timeout_s": 0.1} | (can_cfg or {})}, {})


def can_counters(ctx: EMSContext) -> dict[str, int]:
    return {k: v for k, v in ctx.snapshot().counters.items() if k.startswith("can_")}


def can_worker(cfg: EMSConfig, ctx: EMSContext, clock: Clock, *, bus_factory: Callable[[], can.BusABC] | None = None) -> CanWorker:
    """A CAN worker handed the context parts it uses, as main.build_services builds it (not started)."""
    return CanWorker(
        cfg=cfg.can,
        readings=ctx.readings,
        health=ctx.health,
        events=ctx.events,
        counters=ctx.counters,
        clock=clock,
        bus_factory=bus_factory,
        fault_timeout_s=cfg.control.fault_timeout_s,
    )


def bms_info(ctx: EMSContext) -> dict[str, object]:
    """The BMS device's health info (identity, flags, silent) as a plain dict; {} before the first status."""
    dev = ctx.snapshot().device(DEVICE)
    return {} if dev is None else dict(dev.info)


class BmsTx:
    """The test's BMS node: encodes through the same DBC codec and sends on a bus."""

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self.codec = Codec()
        self.sent = 0

    def send(self, frame_id: int, data: bytes, *, extended: bool = False) -> None:
        self.bus.send(can.Message(arbitration_id=frame_id, is_extended_id=extended, data=data, dlc=len(data)))
        self.sent += 1

    def send_state(
        self,
        *,
        soc_pct: float = 60.0,
        voltage_v: float = 50.0,
        current_a: float = 0.0,
        temperature_degc: float = 25.0,
        ccl_a: float = 100.0,
        dcl_a: float = 100.0,
        charge_enable: bool = True,
        discharge_enable: bool = True,
        force_charge: bool = False,
        protections: frozenset[str] = frozenset(),
        warnings: frozenset[str] = frozenset(),
    ) -> int:
        """Send the whole frame set once; returns how many frames were sent."""
        c = self.codec
        frames = [
            (0x351, c.encode_limits(cvl_v=56.0, ccl_a=ccl_a, dcl_a=dcl_a, dvl_v=46.0)),
            (0x355, c.encode_soc(soc_pct=soc_pct, soh_pct=98.0)),
            (0x356, c.encode_measurements(voltage_v=voltage_v, current_a=current_a, temperature_degc=temperature_degc)),
            (0x359, c.encode_alarms(protections=protections, warnings=warnings, modules=2)),
            (0x35C, c.encode_requests(charge_enable=charge_enable, discharge_enable=discharge_enable, force_charge=force_charge)),
            (0x35E, c.encode_name("PYLON")),
        ]
        for fid, data in frames:
            self.send(fid, data)
        return len(frames)
