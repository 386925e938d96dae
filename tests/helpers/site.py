"""The one builder of simulator + EMS configs for the system tests: a live EMS driving the simulated
ESS and SDM630 meter over Modbus TCP on free loopback ports, with optional BMS (CAN), PV meter and API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.common import free_port

__all__ = ["FLAT_EXPORT", "Site", "site_configs"]

FLAT_EXPORT = "t_s,load_w,pv_w\n0,1500,3000\n"  # 1.5 kW export until the battery charges


@dataclass
class Site:
    sim: dict[str, Any]
    ems: dict[str, Any]
    ports: dict[str, int] = field(default_factory=dict)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def site_configs(
    workdir: Path,
    *,
    profile_csv: str | None = FLAT_EXPORT,
    plant: dict[str, Any] | None = None,
    control: dict[str, Any] | None = None,
    modbus: dict[str, Any] | None = None,
    ems: dict[str, Any] | None = None,
    bms: bool = False,
    pv: bool = False,
    api: bool = False,
    poll_period_s: float = 0.2,
) -> Site:
    """Configs as dicts (the test may change them before writing): `profile_csv` is written to
    `workdir/profile.csv` unless `plant` names a profile; `control`/`modbus`/`ems` are merged in."""
    names = ["ess", "meter", "control"] + (["bms"] if bms else []) + (["pv"] if pv else []) + (["api"] if api else [])
    ports = {n: free_port() for n in names}
    plant_cfg: dict[str, Any] = {"summary_interval_s": 0, "soc_start_pct": 50.0, "meter_noise_w": 0.0, "watchdog_s": 30.0}
    if profile_csv is not None:
        (workdir / "profile.csv").write_text(profile_csv, encoding="utf-8")
        plant_cfg["profile"] = str(workdir / "profile.csv")
    sim: dict[str, Any] = {
        "plant": _merge(plant_cfg, plant or {}),
        "ess": {"port": ports["ess"], "device_id": 1},
        "meter": {"port": ports["meter"], "device_id": 2},
        "control": {"port": ports["control"]},
    }
    device = {"poll_period_s": poll_period_s, "timeout_s": 0.5}
    mb: dict[str, Any] = {
        "enabled": True,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.5,
        "ess": {"port": ports["ess"], "device_id": 1, "map": "auto", **device},
        "meter": {"port": ports["meter"], "device_id": 2, "map": "sdm630", **device},
    }
    required = ["grid_power_w", "ess_power_w", "soc_pct"]
    if bms:
        sim["bms"] = {"enabled": True, "port": ports["bms"]}
        required += ["bms_voltage_v", "bms_ccl_a", "bms_dcl_a"]
    if pv:
        sim["pv"] = {"enabled": True, "port": ports["pv"], "device_id": 3}
        mb["pv"] = {"enabled": True, "port": ports["pv"], "device_id": 3, "map": "sdm630_pv", **device}
    cfg: dict[str, Any] = {
        "site": {"id": "system-test"},
        "control": _merge({"enabled": True, "dry_run": False, "summary_interval_s": 0, "required_sources": required}, control or {}),
        "modbus": _merge(mb, modbus or {}),
    }
    if bms:
        cfg["can"] = {"enabled": True, "interface": "socketcand", "port": ports["bms"], "reopen_s": 0.5, "keepalive_period_s": 1.0}
    if api:
        cfg["api"] = {"enabled": True, "port": ports["api"]}
    return Site(sim, _merge(cfg, ems or {}), ports)
