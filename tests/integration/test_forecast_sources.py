"""PV forecast providers against a real local HTTP server serving their documented answers (tests/fixtures/forecast/)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from interfaces.forecast import ForecastError, slot_means
from interfaces.forecast.forecast_solar import fetch_forecast_solar
from interfaces.forecast.open_meteo import fetch_open_meteo
from tests.helpers.http_fake import fake_provider, fixture, serve

T4 = int(datetime(2023, 6, 2, 4, tzinfo=UTC).timestamp())
PLANE = {"latitude_deg": 51.4556, "longitude_deg": 7.0116, "tilt_deg": 30.0, "azimuth_deg": -10.0}


def test_open_meteo_irradiance_becomes_power_of_the_preceding_quarter() -> None:
    with fake_provider({"/v1/forecast": serve(200, fixture("forecast/open_meteo_gti.json"))}) as fp:
        got = fetch_open_meteo(fp.base_url + "/v1/forecast", **PLANE, peak_w=8000.0, efficiency=0.85, timeout_s=5)
    q = fp.requests[0].query
    assert q["minutely_15"] == ["global_tilted_irradiance"] and q["tilt"] == ["30.0"] and q["azimuth"] == ["-10.0"]
    assert q["timeformat"] == ["unixtime"] and q["timezone"] == ["GMT"]
    assert got.points[0].start_unix_s == T4  # the value stamped 04:15 is the mean of 04:00-04:15
    assert got.points[3].power_w == pytest.approx(110.2 / 1000 * 8000 * 0.85)
    assert len(got.points) == 7  # the null value is left out
    slots = slot_means(got.points, start_unix_s=T4, n_slots=8, slot_s=900)
    assert slots[6] == pytest.approx(480.0 / 1000 * 8000 * 0.85) and slots[7] is None


def test_open_meteo_shortwave_with_local_iso_times() -> None:
    with fake_provider({"/f": serve(200, fixture("forecast/open_meteo_shortwave_iso.json"))}) as fp:
        got = fetch_open_meteo(fp.base_url + "/f", **PLANE, peak_w=5000.0, efficiency=1.0, variable="shortwave_radiation", timeout_s=5)
    assert "tilt" not in fp.requests[0].query
    # 06:15 local at UTC+2 = 04:15 UTC -> the quarter 04:00-04:15 UTC
    assert (got.points[0].start_unix_s, got.points[0].power_w) == (T4, pytest.approx(500.0))


@pytest.mark.parametrize(
    ("status", "name", "reason"), [(400, "open_meteo_error.json", "http_error"), (200, "open_meteo_malformed.json", "malformed")]
)
def test_open_meteo_errors(status: int, name: str, reason: str) -> None:
    with fake_provider({"/f": serve(status, fixture(f"forecast/{name}"))}) as fp, pytest.raises(ForecastError) as exc:
        fetch_open_meteo(fp.base_url + "/f", **PLANE, peak_w=5000.0, efficiency=1.0, timeout_s=5)
    assert exc.value.reason == reason
    if status == 400:
        assert "tilt" in str(exc.value)


def test_forecast_solar_watts_become_interval_means() -> None:
    path = "/estimate/51.4556/7.0116/30/-10/8.000"
    with fake_provider({path: serve(200, fixture("forecast/forecast_solar_estimate.json"))}) as fp:
        got = fetch_forecast_solar(fp.base_url, **PLANE, peak_w=8000.0, timeout_s=5)
    assert fp.requests[0].path == path and fp.requests[0].query == {"time": ["utc"]}
    by_start = {p.start_unix_s: p for p in got.points}
    assert by_start[T4].power_w == pytest.approx((410 + 1320) / 2) and by_start[T4].end_unix_s == T4 + 3600
    night = [p for p in got.points if p.end_unix_s - p.start_unix_s > 3 * 3600]
    assert len(night) == 1 and night[0].power_w == 0.0  # sunset to the next sunrise
    slots = slot_means(got.points, start_unix_s=T4, n_slots=4, slot_s=900)
    assert all(s == pytest.approx(865.0) for s in slots)


def test_forecast_solar_api_key_goes_in_the_path() -> None:
    path = "/SECRETKEY/estimate/51.4556/7.0116/30/-10/8.000"
    with fake_provider({path: serve(200, fixture("forecast/forecast_solar_empty.json"))}) as fp:
        got = fetch_forecast_solar(fp.base_url, **PLANE, peak_w=8000.0, api_key="SECRETKEY", timeout_s=5)
    assert got.points == ()  # nothing forecast (yet): empty, not an error


@pytest.mark.parametrize(
    ("status", "name", "reason"), [(429, "forecast_solar_429.json", "rate_limited"), (200, "forecast_solar_malformed.json", "malformed")]
)
def test_forecast_solar_errors(status: int, name: str, reason: str) -> None:
    path = "/estimate/51.4556/7.0116/30/-10/8.000"
    with fake_provider({path: serve(status, fixture(f"forecast/{name}"))}) as fp, pytest.raises(ForecastError) as exc:
        fetch_forecast_solar(fp.base_url, **PLANE, peak_w=8000.0, timeout_s=5)
    assert exc.value.reason == reason


def test_forecast_solar_server_error_page() -> None:
    with fake_provider({}) as fp, pytest.raises(ForecastError) as exc:
        fetch_forecast_solar(fp.base_url, **PLANE, peak_w=8000.0, timeout_s=5)
    assert exc.value.reason == "http_error"
