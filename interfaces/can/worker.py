"""The CAN BMS worker (DESIGN.md §1, STYLE S6): receive, decode through the DBC, update the context.

One daemon thread. It blocks in `bus.recv(timeout)` so it sees its stop flag at least every
`can.receive_timeout_s`. Each good frame lands in the context with its monotonic receive time:
SOC/SOH, pack voltage/current/temperature, CCL/DCL/CVL/DVL, the 0x35C request flags (1.0/0.0)
and the 0x359 protection/warning flags. Protections become FAULT causes in the core
(`bms_protection:<name>`); warnings are exposed in the flags and in the `bms` status. Every edge
reaches the context at once (a protection is a FAULT cause in the next cycle), but its log line
and alarm event are rate-limited per flag and edge (`can.alarm_log_interval_s`, the next line says
how many were held back; counted `can_alarm_edges`): a BMS that flips random bits cannot flood the log. Malformed frames are counted (`can_frames_<kind>`, `can_frames_malformed`),
logged at most once per `malformed_log_interval_s` per frame id, and skipped. A bus error closes
the bus; it is reopened after `reopen_s`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import can

from config.can import CanConfig, CanInterface, CurrentPositive
from ems.clock import Clock
from ems.context import Counters, EventLog, Health, Readings
from interfaces.can.bus import open_bus
from interfaces.can.codec import BMS_QUANTITIES, KEEPALIVE_ID, BmsFrame, Codec, FrameError
from interfaces.logs import LogGate
from interfaces.worker import Worker

__all__ = ["CORE_FRAME_IDS", "DEVICE", "MAX_MALFORMED_LOGS", "SILENT_FLAG", "CanWorker", "bus_address"]

CORE_FRAME_IDS = frozenset({0x351, 0x356})  # the BMS is "heard" while these arrive (PROTOCOLS.md advice)
SILENT_FLAG = "bms_silent"  # protection flag raised by the worker itself: FAULT cause bms_protection:bms_silent
MAX_MALFORMED_LOGS = 100  # malformed-frame log lines per interval over all ids (a busy foreign bus must not flood the log)
MAX_ALARM_LOGS = 40  # alarm edge lines per interval over all flags
DEVICE = "bms"


def bus_address(cfg: CanConfig) -> str:
    if cfg.interface is CanInterface.SOCKETCAND:
        return f"{cfg.host}:{cfg.port}/{cfg.channel}"
    return f"{cfg.interface.value}:{cfg.channel}"


class CanWorker(Worker):
    expected_errors = (*Worker.expected_errors, can.CanError, FrameError)

    def __init__(
        self,
        *,
        cfg: CanConfig,
        readings: Readings,
        health: Health,
        events: EventLog,
        counters: Counters,
        clock: Clock,
        bus_factory: Callable[[], can.BusABC] | None = None,
        fault_timeout_s: float = 3.0,
        name: str = "can",
    ) -> None:
        super().__init__(name=name, health=health, clock=clock, period_s=cfg.receive_timeout_s, devices=(DEVICE,))
        health.register_device(DEVICE, kind="can", where=bus_address(cfg), thread=name)
        self._writer = readings.claim(DEVICE, BMS_QUANTITIES, bms_flags=True)
        self._events = events
        self._counters = counters
        self._cfg = cfg
        sign = 1.0 if cfg.current_positive is CurrentPositive.CHARGE else -1.0
        self._codec = Codec(current_sign=sign)
        self._open = bus_factory if bus_factory is not None else (lambda: open_bus(cfg))
        self._bus: can.BusABC | None = None
        self._ignore = frozenset(cfg.ignore_ids)
        self._next_keepalive_s = clock.monotonic()
        self._last_core_s = clock.monotonic()
        self._silent = False
        self._silent_after_s = cfg.stale_after_s if cfg.stale_after_s is not None else fault_timeout_s
        self._protections: frozenset[str] = frozenset()
        self._warnings: frozenset[str] = frozenset()
        self._info: dict[str, object] = {}
        self._malformed_logs = LogGate(cfg.malformed_log_interval_s, max_lines=MAX_MALFORMED_LOGS)
        self._alarm_logs = LogGate(cfg.alarm_log_interval_s, max_lines=MAX_ALARM_LOGS)

    # ---- loop ----------------------------------------------------------------------------
    def wait_next(self) -> bool:
        if self._bus is None:  # opening failed or the bus broke: back off before reopening
            return self._stop_event.wait(self._cfg.reopen_s)
        return self._stop_event.is_set()  # recv() already blocked

    def iterate(self) -> None:
        if self._bus is None:
            self._bus = self._open()
            self.log.info("can_bus_opened", interface=self._cfg.interface.value, channel=self._cfg.channel)
        try:
            self._receive_one(self._bus)
        except (can.CanError, OSError):
            self._close_bus()
            raise

    def on_stop(self) -> None:
        self._close_bus()

    def _close_bus(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:
            bus.shutdown()
        except (can.CanError, OSError) as exc:
            self.log.debug("can_bus_close_failed", error=repr(exc))
        self.log.info("can_bus_closed", channel=self._cfg.channel)

    def _receive_one(self, bus: can.BusABC) -> None:
        now = self._clock.monotonic()
        timeout_s = self._cfg.receive_timeout_s
        period = self._cfg.keepalive_period_s
        if period is not None:
            if now >= self._next_keepalive_s:
                bus.send(can.Message(arbitration_id=KEEPALIVE_ID, is_extended_id=False, data=self._codec.encode_keepalive()))
                self._counters.count("can_keepalives_sent")
                self._next_keepalive_s = now + period
            timeout_s = min(timeout_s, max(0.0, self._next_keepalive_s - now))
        msg = bus.recv(timeout_s)
        now = self._clock.monotonic()
        if msg is not None:
            self._handle(msg, now)
        self._check_silence(now)

    # ---- one frame -----------------------------------------------------------------------
    def _handle(self, msg: can.Message, now: float) -> None:
        if msg.is_error_frame:
            self._counters.count("can_error_frames")
            return
        if msg.is_remote_frame or (msg.arbitration_id in self._ignore and not msg.is_extended_id):
            self._counters.count("can_frames_ignored")
            return
        try:
            frame = self._codec.decode(msg.arbitration_id, bytes(msg.data), is_extended_id=msg.is_extended_id)
        except FrameError as exc:
            self._malformed(msg.arbitration_id, exc, now)
            return
        self._apply(frame, now)

    def _malformed(self, frame_id: int, exc: FrameError, now: float) -> None:
        self._counters.count(f"can_frames_{exc.kind}")
        total = self._counters.count("can_frames_malformed")
        held = self._malformed_logs.allow(f"0x{frame_id:X}", now)
        if held is None:
            return
        self.log.warning(
            "can_frame_malformed",
            frame_id=f"0x{frame_id:X}",
            kind=exc.kind,
            detail=str(exc)[:200],
            suppressed_since_last=held,
            malformed_total=total,
        )

    def _apply(self, frame: BmsFrame, now: float) -> None:
        self._counters.count("can_frames_decoded")
        if frame.measurements:
            self._writer.update(frame.measurements, at_s=now)
        changed = False
        if frame.protections is not None and frame.warnings is not None:
            changed = self._update_flags(frame.protections, frame.warnings, now)
        if frame.info:
            changed = self._update_info(frame.info) or changed
        if frame.frame_id in CORE_FRAME_IDS:
            self._last_core_s = now
            if self._silent:
                self._silent = False
                changed = True
                self.log.info("bms_heard", frame_id=f"0x{frame.frame_id:X}")
                self._events.record("alarm", source="bms", level="protection", flag=SILENT_FLAG, raised=False)
                self._publish_flags(now)
            self.succeeded()
        if changed:
            self._publish_status()

    def _publish_flags(self, now: float) -> None:
        protections = self._protections | {SILENT_FLAG} if self._silent else self._protections
        self._writer.set_bms_flags(protections=protections, warnings=self._warnings, at_s=now)

    def _update_flags(self, protections: frozenset[str], warnings: frozenset[str], now: float) -> bool:
        changed = False
        for level, old, new in (("protection", self._protections, protections), ("warning", self._warnings, warnings)):
            for flag, raised in [(f, True) for f in sorted(new - old)] + [(f, False) for f in sorted(old - new)]:
                changed = True
                self._alarm_edge(level, flag, raised=raised, now=now)
        self._protections, self._warnings = protections, warnings
        self._publish_flags(now)  # every edge reaches the context at once, logged or not
        return changed

    def _alarm_edge(self, level: str, flag: str, *, raised: bool, now: float) -> None:
        self._counters.count("can_alarm_edges")
        edge = "raised" if raised else "cleared"
        held = self._alarm_logs.allow(f"{level}:{flag}:{edge}", now)
        if held is None:
            return
        log = (self.log.error if level == "protection" else self.log.warning) if raised else self.log.info
        log(f"bms_{level}_{edge}", flag=flag, suppressed=held)
        self._events.record("alarm", source="bms", level=level, flag=flag, raised=raised, suppressed=held)

    def _update_info(self, info: Mapping[str, object]) -> bool:
        changed = {k: v for k, v in info.items() if self._info.get(k) != v}
        if changed:
            self._info.update(changed)
            if "name" in changed:
                self.log.info("bms_identified", name=changed["name"])
        return bool(changed)

    def _publish_status(self) -> None:
        self._health.set_info(
            DEVICE,
            **self._info,
            protections=sorted(self._protections | {SILENT_FLAG} if self._silent else self._protections),
            warnings=sorted(self._warnings),
            silent=self._silent,
        )

    def _check_silence(self, now: float) -> None:
        silent_s = now - self._last_core_s
        if self._silent:  # every silent pass is a failed unit of work: the bms device shows failing, not ok
            self.failed(SILENT_FLAG, detail=f"no 0x351/0x356 frame for {silent_s:.1f} s")
            return
        if silent_s > self._silent_after_s:
            self._silent = True
            self.log.error("bms_silent", silent_s=round(silent_s, 1), frames="0x351,0x356", fault_cause=f"bms_protection:{SILENT_FLAG}")
            self._events.record("alarm", source="bms", level="protection", flag=SILENT_FLAG, raised=True)
            self.failed(SILENT_FLAG, detail=f"no 0x351/0x356 frame for {silent_s:.1f} s")
            self._publish_flags(now)
            self._publish_status()
