"""/metrics naming conventions (docs/api.md "Metrics"): one metric per quantity with its unit, energy
counters, alert-friendly zero series, no `_created`, and `promtool check metrics` clean where installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ENERGY_METRICS, QUANTITY_METRICS
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from tests.helpers.api import RunningApi, api_config, running_api
from tests.helpers.context import feed, publish

Q = Quantity


def _sample(text: str, name: str) -> float:
    """The value of the unlabelled sample `name` in an exposition."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and not s.labels:
                return float(s.value)
    raise AssertionError(f"{name} not exposed")


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def ctx(clock: SimClock) -> EMSContext:
    return EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)


@pytest.fixture
def api(ctx: EMSContext, clock: SimClock) -> Iterator[RunningApi]:
    with running_api(api_config(), ctx, clock) as running:
        yield running


def _site(ctx: EMSContext, clock: SimClock, *, meter_energy: bool = False) -> None:
    values = {q: 1.0 for q in QUANTITY_METRICS}
    values |= {Q.GRID_POWER_W: 1200.0, Q.ESS_POWER_W: -600.0, Q.SOC_PCT: 55.5, Q.BMS_VOLTAGE_V: 51.2}
    if meter_energy:
        values |= {Q.GRID_IMPORT_WH: 10_000.0, Q.GRID_EXPORT_WH: 2_000.0}
    for _ in range(11):  # 10 s at 1 Hz: 1200 W import and 600 W charge for 10 s
        feed(ctx, values, at_s=clock.monotonic(), source="site")
        clock.advance(1.0)
    publish(ctx, seq=1, setpoint_w=0.0, written_w=0.0, limits=(), at_s=clock.monotonic())


def test_each_quantity_is_its_own_metric_with_its_unit(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock)
    text = api.get("/metrics").text
    assert "ems_measurement{" not in text
    for line in ("ems_grid_power_watts 1200.0", "ems_battery_power_watts -600.0", "ems_battery_soc_percent 55.5",
                 "ems_battery_voltage_volts 51.2", 'ems_measurement_age_seconds{quantity="soc_pct"} 1.0'):  # fmt: skip
        assert line in text, line
    names = {name for name, _ in QUANTITY_METRICS.values()}
    assert len(names) == len(QUANTITY_METRICS)
    assert all(f"# TYPE {n} gauge" in text for n in names)


def test_energy_totals_are_counters_in_joules(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock)
    text = api.get("/metrics").text
    assert "# TYPE ems_grid_import_joules_total counter" in text
    assert _sample(text, "ems_grid_import_joules_total") == pytest.approx(1200.0 * 10)  # 1200 W x 10 s, integrated
    assert _sample(text, "ems_battery_charge_joules_total") == pytest.approx(600.0 * 10)
    assert "ems_battery_discharge_joules_total 0.0" in text and "ems_grid_export_joules_total 0.0" in text
    assert set(ENERGY_METRICS) == {"grid_import_wh", "grid_export_wh", "battery_charge_wh", "battery_discharge_wh"}


def test_the_meters_own_energy_registers_win_over_integration(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock, meter_energy=True)
    text = api.get("/metrics").text
    assert _sample(text, "ems_grid_import_joules_total") == 10_000.0 * 3600
    assert _sample(text, "ems_grid_export_joules_total") == 2_000.0 * 3600


def test_fault_and_limit_series_exist_with_zero_when_nothing_is_active(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock)
    text = api.get("/metrics").text
    assert 'ems_fault_active{cause="stale:grid_power_w"} 0.0' in text
    assert 'ems_limit_bound{limit="soc_min"} 0.0' in text and 'ems_limit_bound{limit="ramp"} 0.0' in text
    assert "ems_faults_active 0.0" in text
    publish(ctx, seq=2, setpoint_w=0.0, written_w=0.0, limits=("ramp",), fault_causes=("worker_dead:can",), at_s=clock.monotonic())
    text = api.get("/metrics").text
    assert 'ems_fault_active{cause="worker_dead:can"} 1.0' in text and "ems_faults_active 1.0" in text
    assert 'ems_limit_bound{limit="ramp"} 1.0' in text
    publish(ctx, seq=3, setpoint_w=0.0, written_w=0.0, limits=(), at_s=clock.monotonic())
    text = api.get("/metrics").text
    assert 'ems_fault_active{cause="worker_dead:can"} 0.0' in text  # a cause once seen stays as a 0 series


def test_no_created_series(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock)
    api.get("/api/v1/status")
    text = api.get("/metrics").text
    assert "_created" not in text
    assert 'ems_api_requests_total{endpoint="/api/v1/status",method="GET",status="200"} 1.0' in text
    assert 'ems_api_request_duration_seconds_count{endpoint="/api/v1/status"} 1.0' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus; make test installs it)")
def test_promtool_check_metrics_is_clean(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _site(ctx, clock, meter_energy=True)
    publish(ctx, seq=2, setpoint_w=0.0, written_w=0.0, limits=("ramp",), fault_causes=("stale:soc_pct",), at_s=clock.monotonic())
    api.get("/api/v1/status")
    text = api.get("/metrics").text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
