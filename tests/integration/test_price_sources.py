"""Price sources against a real local HTTP server serving the providers' documented answers
(tests/fixtures/prices/, written from each provider's public API documentation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.tariff import TariffConfig
from ems.tariff import DayAheadState, day_ahead_state
from interfaces.prices.awattar import fetch_awattar
from interfaces.prices.csv_file import read_price_csv
from interfaces.prices.entsoe import fetch_entsoe
from interfaces.prices.fetch import PriceSourceError, fetch_prices
from interfaces.prices.octopus import fetch_octopus
from interfaces.prices.tibber import fetch_tibber
from tests.helpers.common import REPO_ROOT, free_port
from tests.helpers.http_fake import FakeProvider, Request, fake_provider, fixture, serve

D0 = int(datetime(2023, 6, 1, 22, tzinfo=UTC).timestamp())  # 2023-06-02 00:00 Brussels
H = 3600
TOKEN = "a1b2c3d4-e5f6-7a8b-9c0d-e1f2a3b4c5d6"
BE = "10YBE----------2"


@pytest.fixture
def entsoe() -> Iterator[FakeProvider]:
    def answer(req: Request) -> tuple[int, str, bytes]:
        if req.query.get("securityToken") != [TOKEN]:
            return 401, "text/html", b"<html><body><h1>Unauthorized</h1></body></html>"
        if req.query["periodStart"] == ["202306012200"]:
            return 200, "text/xml", fixture("prices/entsoe_a44_pt60m.xml")
        if req.query["periodStart"] == ["202510012200"]:
            return 200, "text/xml", fixture("prices/entsoe_a44_pt15m_a03.xml")
        if req.query["periodStart"] == ["209901010000"]:
            return 200, "text/xml", fixture("prices/entsoe_truncated.xml")
        if req.query["in_Domain"] != [BE]:
            return 400, "text/xml", fixture("prices/entsoe_bad_query.xml")
        return 200, "text/xml", fixture("prices/entsoe_no_data.xml")

    with fake_provider({"/api": answer}) as fp:
        yield fp


def test_entsoe_hourly_day(entsoe: FakeProvider) -> None:
    got = fetch_entsoe(entsoe.base_url + "/api", token=TOKEN, bidding_zone=BE, start_unix_s=D0, end_unix_s=D0 + 24 * H, timeout_s=5)
    assert len(got.points) == 24 and got.currency == "EUR" and got.source == "entsoe"
    assert (got.points[0].start_unix_s, got.points[0].end_unix_s) == (D0, D0 + H)
    assert got.points[0].price_eur_per_kwh == pytest.approx(0.0985)  # 98.5 EUR/MWh
    assert got.points[13].price_eur_per_kwh == pytest.approx(-0.012)  # negative prices pass through
    q = entsoe.requests[0].query
    assert q["documentType"] == ["A44"] and q["in_Domain"] == q["out_Domain"] == [BE]
    assert (q["periodStart"], q["periodEnd"]) == (["202306012200"], ["202306022200"])


def test_entsoe_a03_left_out_positions_repeat_the_previous_price(entsoe: FakeProvider) -> None:
    t0 = int(datetime(2025, 10, 1, 22, tzinfo=UTC).timestamp())
    got = fetch_entsoe(entsoe.base_url + "/api", token=TOKEN, bidding_zone=BE, start_unix_s=t0, end_unix_s=t0 + 2 * H, timeout_s=5)
    assert [p.end_unix_s - p.start_unix_s for p in got.points] == [900] * 8
    assert [round(p.price_eur_per_kwh * 1000, 2) for p in got.points] == [73.24, 69.79, 69.79, 69.79, 65.05, 65.05, 65.05, 60.0]


def test_entsoe_tomorrow_not_published_is_empty_and_late(entsoe: FakeProvider) -> None:
    got = fetch_entsoe(
        entsoe.base_url + "/api", token=TOKEN, bidding_zone=BE, start_unix_s=D0 + 24 * H, end_unix_s=D0 + 48 * H, timeout_s=5
    )
    assert got.points == ()
    today = fetch_entsoe(entsoe.base_url + "/api", token=TOKEN, bidding_zone=BE, start_unix_s=D0, end_unix_s=D0 + 24 * H, timeout_s=5)
    at_15h = datetime(2023, 6, 2, 15, tzinfo=ZoneInfo("Europe/Brussels")).timestamp()
    state = day_ahead_state(today.points + got.points, now_unix_s=at_15h, tz=ZoneInfo("Europe/Brussels"), publish_local_time=time(13))
    assert state.state is DayAheadState.LATE


def test_entsoe_errors_are_reasons(entsoe: FakeProvider) -> None:
    url = entsoe.base_url + "/api"
    with pytest.raises(PriceSourceError) as auth:
        fetch_entsoe(url, token="wrong", bidding_zone=BE, start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5)
    assert auth.value.reason == "auth"
    with pytest.raises(PriceSourceError) as bad:
        fetch_entsoe(url, token=TOKEN, bidding_zone="10YXX----------X", start_unix_s=D0 + 99 * H, end_unix_s=D0 + 100 * H, timeout_s=5)
    assert bad.value.reason == "http_error" and "A59" in str(bad.value)
    t = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
    with pytest.raises(PriceSourceError) as trunc:
        fetch_entsoe(url, token=TOKEN, bidding_zone=BE, start_unix_s=t, end_unix_s=t + H, timeout_s=5)
    assert trunc.value.reason == "malformed"


def test_entsoe_other_currency_is_refused(entsoe: FakeProvider) -> None:
    with pytest.raises(PriceSourceError) as exc:
        fetch_entsoe(
            entsoe.base_url + "/api", token=TOKEN, bidding_zone=BE, start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5, currency="GBP"
        )
    assert exc.value.reason == "currency"


def test_awattar_prices_and_query() -> None:
    with fake_provider({"/v1/marketdata": serve(200, fixture("prices/awattar_marketdata.json"))}) as fp:
        got = fetch_awattar(fp.base_url + "/v1/marketdata", start_unix_s=D0, end_unix_s=D0 + 24 * H, timeout_s=5)
    assert len(got.points) == 24 and got.points[0].start_unix_s == D0
    assert got.points[19].price_eur_per_kwh == pytest.approx(0.1859)  # Eur/MWh -> EUR/kWh
    assert fp.requests[0].query == {"start": [str(D0 * 1000)], "end": [str((D0 + 24 * H) * 1000)]}


@pytest.mark.parametrize(
    ("status", "name", "reason"),
    [(200, "awattar_malformed.json", "malformed"), (500, "awattar_empty.json", "http_error")],
)
def test_awattar_errors(status: int, name: str, reason: str) -> None:
    with fake_provider({"/v1/marketdata": serve(status, fixture(f"prices/{name}"))}) as fp, pytest.raises(PriceSourceError) as exc:
        fetch_awattar(fp.base_url + "/v1/marketdata", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5)
    assert exc.value.reason == reason


def test_awattar_tomorrow_not_published_is_empty() -> None:
    with fake_provider({"/v1/marketdata": serve(200, fixture("prices/awattar_empty.json"))}) as fp:
        assert fetch_awattar(fp.base_url + "/v1/marketdata", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5).points == ()


def test_tibber_today_only_then_both_days() -> None:
    answers = [fixture("prices/tibber_today_only.json"), fixture("prices/tibber_today_tomorrow.json")]
    with fake_provider({"/v1-beta/gql": lambda _r: (200, "application/json", answers.pop(0))}) as fp:
        url = fp.base_url + "/v1-beta/gql"
        first = fetch_tibber(url, token=TOKEN, timeout_s=5)
        second = fetch_tibber(url, token=TOKEN, price="energy", timeout_s=5)
    req = fp.requests[0]
    assert req.method == "POST" and req.headers["Authorization"] == f"Bearer {TOKEN}"
    q = req.json()["query"]
    assert "priceInfo" in q and "today" in q and "tomorrow" in q and "startsAt" in q
    assert len(first.points) == 24 and len(second.points) == 48
    # 00:00+02:00 is 22:00 UTC the day before; total = retail, energy = spot
    assert first.points[0].start_unix_s == int(datetime(2023, 6, 1, 22, tzinfo=UTC).timestamp())
    assert first.points[0].price_eur_per_kwh == pytest.approx(round(0.1 + 0.0985 * 1.25, 4))
    assert second.points[0].price_eur_per_kwh == pytest.approx(0.0985)
    assert all(b.start_unix_s == a.end_unix_s for a, b in zip(second.points, second.points[1:], strict=False))


def test_tibber_quarter_hourly_asks_for_it() -> None:
    with fake_provider({"/gql": serve(200, fixture("prices/tibber_today_only.json"))}) as fp:
        got = fetch_tibber(fp.base_url + "/gql", token=TOKEN, resolution="QUARTER_HOURLY", timeout_s=5)
    assert "priceInfo(resolution: QUARTER_HOURLY)" in fp.requests[0].json()["query"]
    assert got.points[0].end_unix_s - got.points[0].start_unix_s == 900


def test_tibber_errors() -> None:
    with fake_provider(
        {
            "/unauth": serve(200, fixture("prices/tibber_unauthenticated.json")),
            "/down": serve(502, b"<html>Bad gateway</html>", "text/html"),
        }
    ) as fp:
        with pytest.raises(PriceSourceError) as auth:
            fetch_tibber(fp.base_url + "/unauth", token="bad", timeout_s=5)
        with pytest.raises(PriceSourceError) as down:
            fetch_tibber(fp.base_url + "/down", token=TOKEN, timeout_s=5)
    assert auth.value.reason == "auth" and "UNAUTHENTICATED" in str(auth.value)
    assert down.value.reason == "http_error"


def test_octopus_follows_pages_and_converts_pence() -> None:
    path = "/v1/products/AGILE-24-10-01/electricity-tariffs/E-1R-AGILE-24-10-01-C/standard-unit-rates/"
    holder: dict[str, str] = {}

    def answer(req: Request) -> tuple[int, str, bytes]:
        if req.query.get("page") == ["2"]:
            return 200, "application/json", fixture("prices/octopus_page2.json")
        return 200, "application/json", fixture("prices/octopus_page1.json").replace(b"NEXT_URL", holder["next"].encode())

    with fake_provider({path: answer}) as fp:
        holder["next"] = fp.base_url + path + "?page=2"
        t0 = int(datetime(2023, 6, 2, tzinfo=UTC).timestamp())
        got = fetch_octopus(
            fp.base_url + "/v1",
            product_code="AGILE-24-10-01",
            tariff_code="E-1R-AGILE-24-10-01-C",
            start_unix_s=t0,
            end_unix_s=t0 + 3 * H,
            timeout_s=5,
        )
    assert got.currency == "GBP" and len(got.points) == 6
    assert [p.start_unix_s - t0 for p in got.points] == [0, 1800, 3600, 5400, 7200, 9000]  # oldest first
    assert [p.price_eur_per_kwh for p in got.points] == pytest.approx([0.141, 0.122, 0.099, -0.03, 0.1848, 0.357])  # p/kWh -> GBP/kWh
    assert fp.requests[0].query["period_from"] == ["2023-06-02T00:00:00Z"] and len(fp.requests) == 2


def test_octopus_unknown_tariff_and_empty_window() -> None:
    with fake_provider(
        {
            "/v1/products/X/electricity-tariffs/Y/standard-unit-rates/": serve(404, fixture("prices/octopus_404.json")),
            "/v1/products/A/electricity-tariffs/B/standard-unit-rates/": serve(200, fixture("prices/octopus_empty.json")),
        }
    ) as fp:
        with pytest.raises(PriceSourceError) as exc:
            fetch_octopus(fp.base_url + "/v1", product_code="X", tariff_code="Y", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5)
        empty = fetch_octopus(fp.base_url + "/v1", product_code="A", tariff_code="B", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=5)
    assert exc.value.reason == "http_error" and empty.points == ()


def test_a_silent_server_times_out() -> None:
    release = threading.Event()

    def stall(_req: Request) -> tuple[int, str, bytes]:
        release.wait(10)
        return 200, "application/json", b"{}"

    with fake_provider({"/slow": stall}) as fp:
        try:
            with pytest.raises(PriceSourceError) as exc:
                fetch_awattar(fp.base_url + "/slow", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=0.2)
        finally:
            release.set()
    assert exc.value.reason == "timeout"


def test_nobody_listening_is_unreachable() -> None:
    with pytest.raises(PriceSourceError) as exc:
        fetch_awattar(f"http://127.0.0.1:{free_port()}/v1/marketdata", start_unix_s=D0, end_unix_s=D0 + H, timeout_s=2)
    assert exc.value.reason == "unreachable"


def test_csv_source_reads_the_shipped_year() -> None:
    got = read_price_csv(REPO_ROOT / "simulators" / "year" / "be-dayahead-2023.csv.gz")
    assert len(got.points) == 8760
    assert all(p.end_unix_s - p.start_unix_s == H for p in got.points)
    assert min(p.price_eur_per_kwh for p in got.points) < 0


def test_csv_source_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("time,price\n2023-01-01T00:00:00Z,0.1\n")
    with pytest.raises(PriceSourceError) as exc:
        read_price_csv(bad)
    assert exc.value.reason == "malformed"
    gap = tmp_path / "gap.csv"
    gap.write_text("ts_utc,price_eur_per_kwh\n2023-01-01T00:00:00Z,0.1\n2023-01-01T01:00:00Z,0.2\n2023-01-01T05:00:00Z,0.3\n")
    pts = read_price_csv(gap).points
    assert [(p.end_unix_s - p.start_unix_s) for p in pts] == [H, H, H]  # the 3-hour step is a gap, not a long row


def test_fetch_prices_dispatches_by_config() -> None:
    with fake_provider({"/api": serve(200, fixture("prices/entsoe_a44_pt60m.xml"), "text/xml")}) as fp:
        cfg = TariffConfig.model_validate(
            {
                "timezone": "Europe/Brussels",
                "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6}},
                "source": {"kind": "entsoe", "url": fp.base_url + "/api", "token": {"env": "ENTSOE_TOKEN"}, "bidding_zone": BE},
            }
        )
        assert cfg.source.token is not None
        resolved = cfg.model_copy(
            update={"source": cfg.source.model_copy(update={"token": cfg.source.token.resolve({"ENTSOE_TOKEN": TOKEN})})}
        )
        got = fetch_prices(resolved, start_unix_s=D0, end_unix_s=D0 + 24 * H)
        with pytest.raises(PriceSourceError) as exc:
            fetch_prices(cfg, start_unix_s=D0, end_unix_s=D0 + H)  # secret never resolved
    assert len(got.points) == 24 and exc.value.reason == "auth"
