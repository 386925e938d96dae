"""The simulated site in real time: one Plant stepped by an asyncio task, the ESS, grid meter and (optional) PV meter Modbus
servers that expose it, the CAN BMS simulator, and a rehearsal command channel.

Everything that touches the plant runs in the event loop thread. Other threads (the CAN BMS
sender) read `Simulator.battery`, which reads the last published `PlantView` (an immutable
snapshot replaced after every step, so no lock is needed).

Command channel: one text line per request over TCP on 127.0.0.1 (`control.port`), one line back.
See `Simulator.command` and docs/simulator.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

import structlog

from interfaces.modbus.pointmap import Point, PointMap, load_map
from simulators.config import SimulatorConfig
from simulators.inverter import InverterModel
from simulators.modbus_server import DeviceServer, RegisterImage
from simulators.plant import Plant, PlantParams
from simulators.profile import load_profile

__all__ = ["PlantView", "Simulator", "meter_values"]

log = structlog.get_logger("simulators.site")
T = TypeVar("T")
_AC_V = 230.0
_HZ = 50.0
_ESS_LIFETIME_START_WH = 1_500_000.0  # the inverter's lifetime AC energy before the run: a SunSpec acc32 of 0 reads as not accumulated


@dataclass(frozen=True, slots=True)
class PlantView:
    """What the plant looked like after the last step (for other threads and `status`)."""

    t_s: float
    profile_time: str
    load_w: float
    pv_w: float
    ess_power_w: float
    grid_power_w: float  # as the meter reports it
    grid_true_w: float
    soc_pct: float
    battery_voltage_v: float
    battery_current_a: float
    battery_temperature_degc: float
    charge_current_limit_a: float
    discharge_current_limit_a: float
    setpoint_w: float
    enabled: bool
    watchdog_tripped: bool
    mean_abs_grid_w: float  # since start or the last `stats reset`
    stats_s: float


class BatteryView:
    """`simulators.bms.BatterySource` over the latest PlantView (thread-safe reads)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    @property
    def soc_pct(self) -> float:
        return self._sim.view.soc_pct

    @property
    def battery_voltage_v(self) -> float:
        return self._sim.view.battery_voltage_v

    @property
    def battery_current_a(self) -> float:
        return self._sim.view.battery_current_a

    @property
    def battery_temperature_degc(self) -> float:
        return self._sim.view.battery_temperature_degc

    @property
    def charge_current_limit_a(self) -> float:
        return self._sim.view.charge_current_limit_a

    @property
    def discharge_current_limit_a(self) -> float:
        return self._sim.view.discharge_current_limit_a


async def _named(what: str, aw: Awaitable[T]) -> T:
    """Await `aw`; an OSError (e.g. address in use) is re-raised naming the part and its address."""
    try:
        return await aw
    except OSError as exc:
        raise OSError(f"cannot start {what}: {exc.strerror or exc}") from exc


# A profile's `dynamics:` -> the plant's inverter response, unless the simulator config sets that knob itself.
_DYNAMICS_TO_PLANT = {
    "tau_s": "inverter_tau_s",
    "quantisation_w": "quantisation_w",
    "dead_time_s": "dead_time_s",
    "ramp_w_per_s": "ramp_w_per_s",
}


def _with_dynamics(params: PlantParams, pmap: PointMap, *, explicit: set[str]) -> PlantParams:
    """The plant parameters with the ESS profile's typical dynamics (those the plant models)."""
    known = set(PlantParams.__dataclass_fields__)
    over = {
        plant: getattr(pmap.dynamics, dyn)
        for dyn, plant in _DYNAMICS_TO_PLANT.items()
        if plant in known and plant not in explicit and dyn in pmap.dynamics.model_fields_set and getattr(pmap.dynamics, dyn) is not None
    }
    return replace(params, **over) if over else params


def _split_by_sign(pmap: PointMap, values: Mapping[str, float | str]) -> Mapping[str, float | str]:
    """A summed reading whose parts carry opposite signs is a pair of magnitudes (SMA 31393/31395
    charge/discharge power, 30865/30867 import/export; Fronius model 160 modules 3/4): its value goes to
    the parts of its own sign (evenly), the others read 0. Other sums (per-phase powers) are left to
    the register image, which splits them evenly."""
    parts: dict[str, list[Point]] = {}
    for pt in pmap.all_points():
        if pt.part_of is not None and pt.part_of in values and pt.server_value is None:
            parts.setdefault(pt.part_of, []).append(pt)
    mixed = {n: pts for n, pts in parts.items() if len({pt.sign for pt in pts}) > 1 and not isinstance(values[n], str)}
    if not mixed:
        return values
    out = dict(values)
    for name, pts in mixed.items():
        value = float(out.pop(name))
        side = [pt.name for pt in pts if pt.sign * value > 0]
        out.update({pt.name: value / len(side) if pt.name in side else 0.0 for pt in pts})
    return out


# ---- meter registers by point name --------------------------------------------------------------
# A meter profile's points are named `[m<model>_][grid_|pv_][l1_|l2_|l3_|l12_|l23_|l31_]<what>`
# (`m203_` marks a point of one of several alternative SunSpec models); <what> ends in its unit.
_METER_POINT = re.compile(r"^(?:m\d+_)?(?:grid_|pv_)?(?P<phase>l1_|l2_|l3_|l12_|l23_|l31_)?(?P<what>[a-z0-9_]+)$")
_PHASE_TO_PHASE = ("l12_", "l23_", "l31_")


def meter_values(pmap: PointMap, *, power_w: float, positive_wh: float, negative_wh: float) -> dict[str, float | str]:
    """Plausible SI values for the measurement points of a meter profile, from the one power it measures
    (`power_w`: grid + import, or PV + production) and its two energy counters (counted while the power is
    positive / negative). Per-phase values are the total split evenly over the phases the profile has;
    230 V phase to neutral (400 V phase to phase), 50 Hz, power factor 1 (VA = |W|, var = 0), currents
    W / V with the power's sign unless the point's range is non-negative. A summed reading (`part_of`)
    is set by its own name (the register image splits it over its parts). Points with a server_value and
    names the table does not know are left alone."""
    points = [p for p in pmap.all_points() if p.server_value is None and p.type.value != "string"]
    matches = {p.name: _METER_POINT.match(p.name) for p in points}
    phases = {m.group("phase") for m in matches.values() if m is not None and m.group("phase") in ("l1_", "l2_", "l3_")}
    n = max(len(phases), 1)
    out: dict[str, float | str] = {}
    for p in points:
        name = p.part_of or p.name
        m = matches[p.name] if p.part_of is None else _METER_POINT.match(p.part_of)
        if m is None:
            continue
        value = _meter_value(m.group("phase"), m.group("what"), n=n, power_w=power_w, positive_wh=positive_wh, negative_wh=negative_wh)
        if value is not None:
            out[name] = abs(value) if p.min is not None and p.min >= 0 else value
    return out


def _meter_value(phase: str | None, what: str, *, n: int, power_w: float, positive_wh: float, negative_wh: float) -> float | None:
    share = 1.0 / n if phase in ("l1_", "l2_", "l3_") else 1.0
    px_w = power_w * share
    if what.endswith(("_varh", "_ah")):
        return 0.0
    if what.endswith("_vah"):
        return (positive_wh + negative_wh) * share
    if what.endswith(("_wh", "_kwh")):
        per = 0.001 if what.endswith("_kwh") else 1.0
        if "import" in what:
            wh = positive_wh
        elif "export" in what or "consumed" in what:
            wh = negative_wh
        elif "net" in what:
            wh = positive_wh - negative_wh
        elif "total" in what:
            wh = positive_wh + negative_wh
        else:  # a PV meter's production counter
            wh = positive_wh
        return wh * share * per
    if what.endswith("_hz"):
        return _HZ
    if "power_factor" in what:
        return 1.0
    if what.endswith(("_deg", "_pct")):
        return 0.0
    if what.endswith("_va"):
        return abs(px_w)
    if what.endswith("_var"):
        return 0.0
    if what.endswith("_w"):
        if "import" in what:
            return max(px_w, 0.0)
        if "export" in what:
            return max(-px_w, 0.0)
        return abs(px_w) if "max" in what else px_w
    if what.endswith("_a"):
        if "neutral" in what:
            return 0.0
        amps = (power_w / n if "average" in what else px_w) / _AC_V
        return abs(amps) if ("max" in what or "demand" in what) else amps
    if what.endswith("_v"):
        return _AC_V * math.sqrt(3.0) if phase in _PHASE_TO_PHASE or "ll_" in what else _AC_V
    return None


def _hms(t_s: float) -> str:
    t = int(t_s) % 86400
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


class Simulator:
    def __init__(self, cfg: SimulatorConfig, *, device_clock: Callable[[], float] | None = None) -> None:
        """`device_clock`: what the devices' own timers run on (revert timers): real monotonic time
        by default, whatever the plant's speed; a deterministic test passes the plant's time."""
        self.cfg = cfg
        self._device_clock = device_clock or time.monotonic
        pc = cfg.plant
        # the inverter's revert timer is the profile's (simulators/inverter.py), not the plant's watchdog
        ess_map = load_map(cfg.ess.map) if cfg.ess.enabled else None
        params = replace(pc.params(), watchdog_s=0.0)
        if ess_map is not None:
            params = _with_dynamics(params, ess_map, explicit=pc.model_fields_set)
        self.plant = Plant(params, load_profile(pc.profile), start_t_s=pc.start_time_s)
        self.load_offset_w = pc.load_offset_w
        self.plant.load_offset_w = pc.load_offset_w
        self.inverter: InverterModel | None = None
        self._reverts_seen = 0
        if ess_map is not None and ess_map.control is not None:
            # a device timer the EMS can set starts at the plant's watchdog_s; a device without one never reverts
            default_revert_s = (pc.watchdog_s or None) if ess_map.control.revert.point is not None else None
            # a percent-of-rating profile's percentages refer to the rating it reports (served below by Quantity name)
            rating_w = pc.inverter_max_charge_w if ess_map.control.rating == "ess_max_charge_w" else pc.inverter_max_discharge_w
            self.inverter = InverterModel(ess_map, rating_w=rating_w, default_revert_s=default_revert_s)
        self._battery_heartbeat = 0
        self._abs_grid_ws = 0.0
        self._stats_s = 0.0
        self.images: dict[str, RegisterImage] = {}
        self._extra_units: list[tuple[str, int, RegisterImage]] = []  # (device, unit id, image)
        self.devices: dict[str, DeviceServer] = {}  # by device name; devices on one serial line share a server
        for name, dc, on_write in (("ess", cfg.ess, self._on_ess_write), ("meter", cfg.meter, None), ("pv", cfg.pv, None)):
            if dc.enabled:
                pmap = load_map(dc.map)
                # one image per unit id: the device's own (unless every point of a plain profile names a unit,
                # e.g. a Victron GX's system 100 and VE.Bus 227: then only those answer), and each named unit
                units: list[tuple[str, int, RegisterImage]] = []
                if pmap.kind == "sunspec" or any(p.device_id is None for p in pmap.points):
                    units.append((name, dc.device_id, RegisterImage(pmap, on_write=on_write)))
                for key, unit in pmap.device_ids.items():  # points at other unit ids of the same device (Victron VE.Bus)
                    if pmap.kind == "plain" and not any(p.device_id == key for p in pmap.points):
                        continue
                    units.append((f"{name}.{key}", unit, RegisterImage(pmap, on_write=on_write, unit_key=key)))
                for key, _unit, img in units:
                    self.images[key] = img
                _key, main_unit, main_image = units[0]
                self._extra_units += [(name, unit, img) for _k, unit, img in units[1:]]
                shared = next(
                    (
                        d
                        for d in self.devices.values()
                        if dc.transport == "rtu" and d.transport == "rtu" and d.serial_port == dc.serial_port
                    ),
                    None,
                )
                if shared is not None:
                    shared.attach(main_unit, main_image)
                    self.devices[name] = shared
                else:
                    self.devices[name] = DeviceServer(
                        name,
                        main_image,
                        transport=dc.transport,
                        host=dc.host,
                        port=dc.port,
                        serial_port=dc.serial_port,
                        baudrate=dc.baudrate,
                        device_id=main_unit,
                        single_client=pmap.device.single_client,
                    )
        for name, unit, img in self._extra_units:
            self.devices[name].attach(unit, img)
        self.battery = BatteryView(self)
        self._refresh_images()  # serve the plant from the first request on (a rating read at connect must not read 0)
        self.view = self._make_view()
        self.bms = None
        if cfg.bms.enabled:
            from simulators.bms import BmsSimulator

            self.bms = BmsSimulator(self.battery, cfg.bms)
        self._control_server: asyncio.Server | None = None
        self.control_port: int | None = None

    # ---- the inverter's behaviour on writes -----------------------------------------------------
    @property
    def enabled(self) -> bool:
        """The inverter is under the EMS's control (for the reference device: Ena = 1)."""
        return self.inverter is not None and self.inverter.external

    @property
    def setpoint_w(self) -> float:
        """What the inverter drives toward now: the EMS's command, or its own mode's power."""
        if self.inverter is None:
            return 0.0
        p = self.plant
        return self.inverter.target_w(net_load_w=p.load_w - p.pv_w)

    def _on_ess_write(self, name: str, value: float) -> None:
        if self.inverter is None:
            return
        was_reverted = self.inverter.reverted
        self.inverter.write(name, value, now_s=self._device_clock())
        if was_reverted and not self.inverter.reverted:
            log.info("sim_inverter_recovered", t=_hms(self.plant.profile_t_s))
        self.plant.set_setpoint(self.setpoint_w)
        # the status shows a write at once (not at the next plant step): a caller that saw the EMS's
        # write acknowledged must read it back here (tests, bench fault reaction, rehearsals)
        self.view = self._make_view()

    # ---- stepping -------------------------------------------------------------------------------
    def step(self, dt_s: float) -> None:
        """Advance the plant by `dt_s` simulated seconds and refresh the register images."""
        p = self.plant
        if self.inverter is not None:
            self.inverter.step(self._device_clock())
            p.set_setpoint(self.setpoint_w)  # its own mode follows the load between writes
            if self.inverter.reverts != self._reverts_seen:  # the timer fired: its registers say so (revert.on_revert)
                self._reverts_seen = self.inverter.reverts
                self._set("ess", {w.point: w.value for w in self.inverter.spec.revert.on_revert})
        p.step(dt_s)
        self._abs_grid_ws += abs(p.grid_true_w) * dt_s
        self._stats_s += dt_s
        self._battery_heartbeat = (self._battery_heartbeat + 1) % 0x10000
        self._refresh_images()
        self.view = self._make_view()

    def _refresh_images(self) -> None:
        p = self.plant
        if any(k == "ess" or k.startswith("ess.") for k in self.images):
            prm = p.params
            ess_w = p.ess_power_w
            charging, discharging = ess_w < -1.0, ess_w > 1.0
            # ChaSt (models 124 and 802): 4 CHARGING, 3 DISCHARGING, 5 FULL, 2 EMPTY, 6 HOLDING
            cha_st = 4.0 if charging else 3.0 if discharging else (5.0 if p.soc_pct >= 99.9 else 2.0 if p.soc_pct <= 0.1 else 6.0)
            self._set(
                "ess",
                {
                    "ac_current_a": abs(ess_w) / _AC_V / 3.0,
                    "ac_voltage_v": _AC_V,
                    "ac_frequency_hz": _HZ,
                    "ess_power_w": ess_w,
                    "ac_power_w": ess_w,  # the battery inverter's AC output (+ feeding the site), where a profile shows it apart
                    "ac_energy_wh": _ESS_LIFETIME_START_WH + p.ess_discharged_wh,
                    "ess_status": 4.0 if (charging or discharging) else 8.0,
                    "ess_max_charge_w": prm.inverter_max_charge_w,
                    "storage_control_mode": 0.0,
                    "charge_state_pct": p.soc_pct,
                    "battery_voltage_v": p.battery_voltage_v,
                    "charge_status": cha_st,
                    "charge_status_802": cha_st,
                    "battery_capacity_ah": prm.capacity_wh / prm.nominal_voltage_v,  # 802 nameplate (AHRtg, WHRtg)
                    "battery_capacity_wh": prm.capacity_wh,
                    "ess_max_charge_w_802": prm.inverter_max_charge_w,
                    "ess_max_discharge_w": prm.inverter_max_discharge_w,
                    "soc_pct": p.soc_pct,
                    "soh_pct": 100.0,
                    "battery_heartbeat": float(self._battery_heartbeat),
                    "battery_state": 3.0,
                    "bms_voltage_v": p.battery_voltage_v,
                    "bms_current_a": p.battery_current_a,
                    "bms_ccl_a": p.charge_current_limit_a,
                    "bms_dcl_a": p.discharge_current_limit_a,
                    "battery_power_w": -p.battery_current_a * p.battery_voltage_v,
                    "enable": 1.0 if self.enabled else 0.0,
                    "setpoint_w": self.setpoint_w,
                    "watchdog_s": self.inverter.revert_s or 0.0 if self.inverter is not None else 0.0,
                    "watchdog_tripped": 1.0 if self.inverter is not None and self.inverter.reverted else 0.0,
                    # what a hybrid inverter also reports (profiles name these points by Quantity): its grid meter and PV input
                    "grid_power_w": p.grid_power_w,
                    "grid_voltage_v": _AC_V,
                    "grid_frequency_hz": _HZ,
                    "grid_import_wh": p.grid_import_wh,
                    "grid_export_wh": p.grid_export_wh,
                    "pv_power_w": p.pv_w,
                },
            )
        if "meter" in self.images:  # every meter profile, by point name: see meter_values
            pmap = self.images["meter"].map
            self._set("meter", meter_values(pmap, power_w=p.grid_power_w, positive_wh=p.grid_import_wh, negative_wh=p.grid_export_wh))
        if "pv" in self.images:  # the plant counts no PV energy: a PV meter's counters stay at 0
            self._set("pv", meter_values(self.images["pv"].map, power_w=p.pv_w, positive_wh=0.0, negative_wh=0.0))

    def _set(self, device: str, values: dict[str, float | str]) -> None:
        """Serve `values` in every image of `device` (its main unit and any other unit ids it has)."""
        for key, img in self.images.items():
            if key == device or key.startswith(device + "."):
                img.set_values(_split_by_sign(img.map, values))

    def _make_view(self) -> PlantView:
        p = self.plant
        return PlantView(
            t_s=p.t_s,
            profile_time=_hms(p.profile_t_s),
            load_w=p.load_w,
            pv_w=p.pv_w,
            ess_power_w=p.ess_power_w,
            grid_power_w=p.grid_power_w,
            grid_true_w=p.grid_true_w,
            soc_pct=p.soc_pct,
            battery_voltage_v=p.battery_voltage_v,
            battery_current_a=p.battery_current_a,
            battery_temperature_degc=p.battery_temperature_degc,
            charge_current_limit_a=p.charge_current_limit_a,
            discharge_current_limit_a=p.discharge_current_limit_a,
            setpoint_w=p.setpoint_w,
            enabled=self.enabled,
            watchdog_tripped=self.inverter is not None and self.inverter.reverted,
            mean_abs_grid_w=self._abs_grid_ws / self._stats_s if self._stats_s > 0 else 0.0,
            stats_s=self._stats_s,
        )

    # ---- commands -------------------------------------------------------------------------------
    async def command(self, line: str) -> str:
        """`status` | `ess|meter|pv stop|start|restart` | `ess|meter|pv silent on|off` | `load_offset W` |
        `stats reset` | `bms <bms command>` (see simulators/bms.py). Returns one line."""
        words = line.strip().split()
        try:
            if words == ["status"]:
                return json.dumps(self.status(), separators=(",", ":"))
            if len(words) == 2 and words[0] in self.devices and words[1] in ("stop", "start", "restart"):
                dev = self.devices[words[0]]
                if words[1] in ("stop", "restart"):
                    await dev.stop()
                if words[1] in ("start", "restart"):
                    await dev.start()
                return f"ok {words[0]} running={dev.running}"
            if len(words) == 3 and words[0] in self.devices and words[1] == "silent" and words[2] in ("on", "off"):
                self.devices[words[0]].set_silent(words[2] == "on")
                return f"ok {words[0]} silent={words[2] == 'on'}"
            if len(words) == 2 and words[0] == "load_offset":
                w = float(words[1])
                if not math.isfinite(w):
                    raise ValueError("load_offset must be finite")
                self.plant.load_offset_w = w
                log.info("sim_load_offset_set", load_offset_w=w)
                return f"ok load_offset_w={w:g}"
            if words == ["stats", "reset"]:
                self._abs_grid_ws = 0.0
                self._stats_s = 0.0
                return "ok stats reset"
            if words[:1] == ["bms"]:
                if self.bms is None:
                    return "error: the BMS simulator is not enabled (bms.enabled)"
                return self.bms.command(" ".join(words[1:]))
        except (ValueError, OSError) as exc:
            return f"error: {exc}"
        return f"error: unknown command {line.strip()!r} (try: status, meter stop, meter start, ess silent on, load_offset 1500, bms ...)"

    def status(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self.view)
        out["devices"] = {
            n: {"running": d.running, "silent": d.silent, "where": d.where(), "requests": d.requests} for n, d in self.devices.items()
        }
        out["load_offset_w"] = self.plant.load_offset_w
        return out

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.command(line.decode("utf-8", "replace"))
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set. Raises OSError naming the part that cannot start (e.g. a port in use)."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        bms_started = False
        try:
            for dev in self._servers():
                await _named(f"{dev.name} ({dev.where()})", dev.start())
            if cfg.control.enabled:
                where = f"command channel (tcp://{cfg.control.host}:{cfg.control.port})"
                self._control_server = await _named(where, asyncio.start_server(self._serve_client, cfg.control.host, cfg.control.port))
                self.control_port = self._control_server.sockets[0].getsockname()[1]
            if self.bms is not None:
                await _named(f"bms (CAN hub tcp://{cfg.bms.host}:{cfg.bms.port})", asyncio.to_thread(self.bms.start))
                bms_started = True
            log.info(
                "simulator_started",
                profile=self.plant.profile.name,
                start_time=cfg.plant.start_time,
                speed=cfg.plant.speed,
                soc_pct=round(self.plant.soc_pct, 1),
                control=f"tcp://{cfg.control.host}:{self.control_port}" if self.control_port else None,
                **{n: d.where() for n, d in self.devices.items()},
                bms_port=self.bms.port if self.bms is not None else None,
            )
            await self._tick(stop, loop)
        finally:
            if self.bms is not None and bms_started:
                await asyncio.to_thread(self.bms.stop)
            if self._control_server is not None:
                self._control_server.close()
            for dev in self._servers():
                await dev.stop()
            log.info(
                "simulator_stopped",
                t=self.view.profile_time,
                soc_pct=round(self.view.soc_pct, 2),
                mean_abs_grid_w=round(self.view.mean_abs_grid_w, 1),
                stats_s=round(self.view.stats_s, 1),
            )

    def _servers(self) -> list[DeviceServer]:
        """Each server once (devices on one serial line share one)."""
        out: list[DeviceServer] = []
        for d in self.devices.values():
            if all(d is not o for o in out):
                out.append(d)
        return out

    async def _tick(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        pc = self.cfg.plant
        last = loop.time()
        next_summary = last + pc.summary_interval_s
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=pc.step_s)
                return
            except TimeoutError:
                pass
            now = loop.time()
            self.step((now - last) * pc.speed)
            last = now
            if pc.summary_interval_s > 0 and now >= next_summary:
                next_summary += pc.summary_interval_s
                v = self.view
                log.info(
                    "plant_summary",
                    t=v.profile_time,
                    load_w=round(v.load_w),
                    pv_w=round(v.pv_w),
                    ess_w=round(v.ess_power_w),
                    grid_w=round(v.grid_true_w),
                    soc_pct=round(v.soc_pct, 2),
                    setpoint_w=round(v.setpoint_w),
                    enabled=v.enabled,
                    mean_abs_grid_w=round(v.mean_abs_grid_w, 1),
                )
