"""The simulated SunSpec ESS as an independent SunSpec client sees it (pysunspec2, the SunSpec
Alliance's own library, with the model definitions it ships): discovery, model lengths, every
mandatory point implemented, every enumeration one of its symbols, the 802 nameplate right."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from simulators.config import load_sim_config
from simulators.site import Simulator
from tests.helpers.common import free_port
from tests.helpers.modbus import LoopThread

sunspec_client = pytest.importorskip("sunspec2.modbus.client", reason="pysunspec2 not installed (requirements-dev.txt)")

STANDARD_MODELS = (1, 103, 124, 802)  # 64901 is this project's vendor model: no public definition


@pytest.fixture
def device() -> Iterator[tuple[Any, Simulator]]:
    loop = LoopThread()
    port = free_port()
    cfg = load_sim_config(None, {"ess.port": port, "meter.port": free_port(), "plant.soc_start_pct": 50.0, "control.enabled": False})
    sim = Simulator(cfg)

    async def start() -> None:
        await sim.devices["ess"].start()

    loop.run(start())
    loop.call(lambda: sim.step(0.1))  # one plant step: the dynamic points have values
    d = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        d.scan()
        yield d, sim
    finally:
        d.close()

        async def stop() -> None:
            await sim.devices["ess"].stop()

        loop.run(stop())
        loop.close()


def _points(model: Any) -> dict[str, Any]:
    return dict(model.points)


def test_a_sunspec_client_finds_the_models_with_their_defined_lengths(device: tuple[Any, Simulator]) -> None:
    d, _ = device
    assert d.base_addr == 40000
    for mid in STANDARD_MODELS:
        (model,) = d.models[mid]
        assert not model.error_info, f"model {mid}: {model.error_info}"


@pytest.mark.parametrize("mid", STANDARD_MODELS)
def test_every_mandatory_point_is_implemented_and_every_enumeration_is_one_of_its_symbols(device: tuple[Any, Simulator], mid: int) -> None:
    d, _ = device
    (model,) = d.models[mid]
    model.read()
    missing, bad_enum = [], []
    for name, pt in _points(model).items():
        pdef = pt.pdef
        if pdef.get("mandatory") == "M" and pt.value is None:
            missing.append(name)
        symbols = {s["value"] for s in pdef.get("symbols", [])}
        if pdef.get("type") in ("enum16", "enum32") and symbols and pt.value is not None and pt.value not in symbols:
            bad_enum.append(f"{name}={pt.value}")
    assert missing == [], f"model {mid}: mandatory points not implemented: {missing}"
    assert bad_enum == [], f"model {mid}: enumerations outside their symbols: {bad_enum}"


def test_the_802_nameplate_and_state_match_the_simulated_battery(device: tuple[Any, Simulator]) -> None:
    d, sim = device
    (model,) = d.models[802]
    model.read()
    p = _points(model)
    prm = sim.plant.params
    assert p["WHRtg"].cvalue == pytest.approx(prm.capacity_wh, abs=10.0)
    assert p["AHRtg"].cvalue == pytest.approx(prm.capacity_wh / prm.nominal_voltage_v, abs=1.0)
    assert p["Typ"].value == 4 and p["State"].value == 3 and p["LocRemCtl"].value == 0  # LITHIUM_ION, CONNECTED, REMOTE
    assert p["SoC"].cvalue == pytest.approx(50.0, abs=0.5)
    assert p["ChaSt"].value in (2, 3, 4, 5, 6) and p["SetOp"].value == 1 and p["SetInvState"].value == 3
