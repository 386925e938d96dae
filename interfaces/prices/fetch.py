"""Price sources (docs/scheduling.md): ENTSO-E, aWATTar, Tibber, Octopus Agile and CSV.

`fetch_prices(cfg, start_unix_s=, end_unix_s=)` picks the configured one and returns a
`PriceFetch` (possibly empty: nothing published yet) or raises `PriceSourceError` with a short
reason. The planner thread (integration step) calls it every `source.refresh_s`, keeps the last
good points, and reports `ems.tariff.day_ahead_state` and the error reason as its state.
"""

from __future__ import annotations

import requests

from config.tariff import PriceSourceKind, TariffConfig
from interfaces.prices.awattar import fetch_awattar
from interfaces.prices.common import PriceFetch, PriceSourceError
from interfaces.prices.csv_file import read_price_csv
from interfaces.prices.entsoe import fetch_entsoe
from interfaces.prices.octopus import fetch_octopus
from interfaces.prices.tibber import fetch_tibber

__all__ = ["PriceFetch", "PriceSourceError", "fetch_prices"]


def _token(cfg: TariffConfig) -> str:
    ref = cfg.source.token
    if ref is None or not ref.value:
        raise PriceSourceError("auth", f"{cfg.source.kind.value}: the token is not resolved (config secrets are resolved at load)")
    return ref.value


def fetch_prices(cfg: TariffConfig, *, start_unix_s: int, end_unix_s: int, session: requests.Session | None = None) -> PriceFetch:
    src = cfg.source
    url = src.endpoint
    if src.kind in (PriceSourceKind.NONE, PriceSourceKind.PUSH):  # nothing to fetch: prices arrive by push
        return PriceFetch(src.kind.value, cfg.currency, ())
    if src.kind is PriceSourceKind.CSV:
        assert src.path is not None
        got = read_price_csv(src.path, currency=cfg.currency)
        return PriceFetch("csv", got.currency, tuple(p for p in got.points if p.end_unix_s > start_unix_s and p.start_unix_s < end_unix_s))
    assert url is not None
    if src.kind is PriceSourceKind.ENTSOE:
        assert src.bidding_zone is not None
        return fetch_entsoe(
            url,
            token=_token(cfg),
            bidding_zone=src.bidding_zone,
            start_unix_s=start_unix_s,
            end_unix_s=end_unix_s,
            timeout_s=src.timeout_s,
            currency=cfg.currency,
            session=session,
        )
    if src.kind is PriceSourceKind.AWATTAR:
        got = fetch_awattar(url, start_unix_s=start_unix_s, end_unix_s=end_unix_s, timeout_s=src.timeout_s, session=session)
    elif src.kind is PriceSourceKind.TIBBER:
        got = fetch_tibber(
            url,
            token=_token(cfg),
            home_id=src.home_id,
            price=src.tibber_price,
            resolution=src.tibber_resolution,
            timeout_s=src.timeout_s,
            currency=cfg.currency,
            session=session,
        )
    else:
        assert src.product_code is not None and src.tariff_code is not None
        got = fetch_octopus(
            url,
            product_code=src.product_code,
            tariff_code=src.tariff_code,
            start_unix_s=start_unix_s,
            end_unix_s=end_unix_s,
            timeout_s=src.timeout_s,
            session=session,
        )
    if got.points and got.currency != cfg.currency:
        raise PriceSourceError("currency", f"{got.source} prices are in {got.currency}, the tariff in {cfg.currency}")
    return got
