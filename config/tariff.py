"""`tariff:` section: what a kWh costs to import and earns to export, and where spot prices come from
(docs/scheduling.md). Part of the root config (config/schema.py); used by the planner thread.

Each side (import, export) is one of:
- `fixed`: one price;
- `time_of_use`: local-time windows (days of the week, HH:MM to HH:MM), a default outside them;
- `dynamic`: the spot price through a formula, (spot x spot_factor + adder) x (1 + vat_pct / 100),
  then clamped to [floor, ceiling] when given (negative spot prices pass through unless a floor says otherwise);
- `zero` (export only makes sense): nothing.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from config.common import SecretRef, Section

__all__ = [
    "PriceFormula",
    "PriceKind",
    "PriceSourceConfig",
    "PriceSourceKind",
    "TariffConfig",
    "TariffSide",
    "TouWindow",
    "Weekday",
]

_EIC = re.compile(r"^[0-9A-Z-]{16}$")


class PriceKind(StrEnum):
    FIXED = "fixed"
    TIME_OF_USE = "time_of_use"
    DYNAMIC = "dynamic"
    ZERO = "zero"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


ALL_DAYS = tuple(Weekday)


class PriceFormula(Section):
    """price = (spot x spot_factor + adder_eur_per_kwh) x (1 + vat_pct / 100), clamped to [floor, ceiling]."""

    spot_factor: float = Field(1.0, ge=-10, le=10, description="multiplier on the spot price (1 = pass-through)")
    adder_eur_per_kwh: float = Field(
        0.0,
        ge=-10,
        le=10,
        description="fees, levies and margin added to the spot price before VAT (negative for an export deduction), EUR/kWh",
    )
    vat_pct: float = Field(0.0, ge=0, le=100, description="VAT applied on top, %")
    floor_eur_per_kwh: float | None = Field(
        None, ge=-10, le=10, description="lowest price after the formula (e.g. 0 for an export contract that never charges), EUR/kWh"
    )
    ceiling_eur_per_kwh: float | None = Field(None, ge=-10, le=10, description="highest price after the formula (price cap), EUR/kWh")

    @model_validator(mode="after")
    def _ordered(self) -> PriceFormula:
        if (
            self.floor_eur_per_kwh is not None
            and self.ceiling_eur_per_kwh is not None
            and self.floor_eur_per_kwh > self.ceiling_eur_per_kwh
        ):
            raise ValueError(
                f"floor_eur_per_kwh: must be <= ceiling_eur_per_kwh (got {self.floor_eur_per_kwh:g} > {self.ceiling_eur_per_kwh:g})"
            )
        return self


class TouWindow(Section):
    """A time-of-use window in local time; `end` <= `start` wraps past midnight (22:00 to 06:00)."""

    start: time = Field(description="window start, local time HH:MM")
    end: time = Field(description="window end, local time HH:MM (00:00 = midnight at the end of the day)")
    days: tuple[Weekday, ...] = Field(ALL_DAYS, min_length=1, description="days of the week the window starts on (mon ... sun)")
    price_eur_per_kwh: float = Field(ge=-10, le=10, description="price inside the window, EUR/kWh")

    @field_validator("start", "end")
    @classmethod
    def _whole_minutes(cls, v: time) -> time:
        if v.second or v.microsecond or v.tzinfo is not None:
            raise ValueError("give local time as HH:MM (no seconds, no offset)")
        return v


class TariffSide(Section):
    kind: PriceKind = Field(description="fixed | time_of_use | dynamic | zero")
    price_eur_per_kwh: float | None = Field(
        None, ge=-10, le=10, description="fixed: the price; time_of_use: the price outside every window, EUR/kWh"
    )
    windows: tuple[TouWindow, ...] = Field((), max_length=64, description="time_of_use: the windows, first match wins")
    formula: PriceFormula = Field(default_factory=PriceFormula, description="dynamic: how the spot price becomes this side's price")

    @model_validator(mode="after")
    def _complete(self) -> TariffSide:
        if self.kind in (PriceKind.FIXED, PriceKind.TIME_OF_USE) and self.price_eur_per_kwh is None:
            raise ValueError(f"price_eur_per_kwh: required when kind is {self.kind.value}")
        if self.kind is PriceKind.TIME_OF_USE and not self.windows:
            raise ValueError("windows: time_of_use needs at least one window")
        if self.kind is not PriceKind.TIME_OF_USE and self.windows:
            raise ValueError(f"windows: only used when kind is time_of_use (kind is {self.kind.value})")
        if self.kind in (PriceKind.DYNAMIC, PriceKind.ZERO) and self.price_eur_per_kwh is not None:
            raise ValueError(f"price_eur_per_kwh: not used when kind is {self.kind.value}; use formula for a dynamic price")
        return self


class PriceSourceKind(StrEnum):
    NONE = "none"
    PUSH = "push"  # prices arrive only over REST (PUT /api/v1/prices) or MQTT (<base>/cmd/prices)
    ENTSOE = "entsoe"
    AWATTAR = "awattar"
    TIBBER = "tibber"
    OCTOPUS = "octopus"
    CSV = "csv"


_DEFAULT_URLS = {
    PriceSourceKind.ENTSOE: "https://web-api.tp.entsoe.eu/api",
    PriceSourceKind.AWATTAR: "https://api.awattar.de/v1/marketdata",
    PriceSourceKind.TIBBER: "https://api.tibber.com/v1-beta/gql",
    PriceSourceKind.OCTOPUS: "https://api.octopus.energy/v1",
}


class PriceSourceConfig(Section):
    kind: PriceSourceKind = Field(
        PriceSourceKind.NONE,
        description="none | push (REST/MQTT only) | entsoe | awattar | tibber | octopus | csv (a push is also accepted beside a fetching source)",
    )
    url: str | None = Field(
        None,
        max_length=500,
        pattern=r"^https?://",
        description="endpoint (null = the provider's public one; aWATTar Austria: https://api.awattar.at/v1/marketdata)",
    )
    token: SecretRef | None = Field(None, description="entsoe security token / tibber access token: {env: NAME} or {file: PATH}")
    bidding_zone: str | None = Field(None, description="entsoe: EIC code of the bidding zone, e.g. 10YBE----------2 (Belgium)")
    home_id: str | None = Field(None, max_length=100, description="tibber: home id (null = the first home of the account)")
    tibber_price: Literal["total", "energy"] = Field(
        "total", description="tibber: total (retail incl. fees and VAT: pair with an identity formula) or energy (spot part)"
    )
    tibber_resolution: Literal["HOURLY", "QUARTER_HOURLY"] = Field("HOURLY", description="tibber: priceInfo resolution")
    product_code: str | None = Field(None, max_length=100, description="octopus: product code, e.g. AGILE-24-10-01")
    tariff_code: str | None = Field(
        None, max_length=100, description="octopus: tariff code incl. region letter, e.g. E-1R-AGILE-24-10-01-C"
    )
    path: Path | None = Field(None, description="csv: file with header ts_utc,price_eur_per_kwh (hourly or 15-minute rows)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="HTTP timeout per request, s")
    refresh_s: float = Field(
        900.0, ge=60, le=86400, description="fetch prices this often, s (the next day is usually published once, around 13:00 local)"
    )
    publish_local_time: time = Field(
        time(13, 0), description="the next day's prices are expected by this local time; later, the source reports tomorrow as late"
    )

    @property
    def endpoint(self) -> str | None:
        return self.url or _DEFAULT_URLS.get(self.kind)

    @model_validator(mode="after")
    def _needs(self) -> PriceSourceConfig:
        k = self.kind
        if k in (PriceSourceKind.ENTSOE, PriceSourceKind.TIBBER) and self.token is None:
            raise ValueError(f"token: required for {k.value}")
        if k is PriceSourceKind.ENTSOE and (self.bidding_zone is None or not _EIC.match(self.bidding_zone)):
            raise ValueError(f"bidding_zone: a 16-character EIC code is required for entsoe (got {self.bidding_zone!r})")
        if k is PriceSourceKind.OCTOPUS and (self.product_code is None or self.tariff_code is None):
            raise ValueError("product_code: octopus needs product_code and tariff_code")
        if k is PriceSourceKind.CSV and self.path is None:
            raise ValueError("path: required for csv")
        return self


class TariffConfig(Section):
    timezone: str = Field("Europe/Berlin", description="IANA time zone of time-of-use windows and of the day-ahead market day")
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="currency of every price (the _eur names hold this currency)")
    import_price: TariffSide = Field(
        default_factory=lambda: TariffSide(kind=PriceKind.FIXED, price_eur_per_kwh=0.30), description="price of a kWh taken from the grid"
    )
    export_price: TariffSide = Field(default_factory=lambda: TariffSide(kind=PriceKind.ZERO), description="price paid for a kWh fed in")
    source: PriceSourceConfig = Field(default_factory=PriceSourceConfig, description="where spot prices come from (dynamic sides)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _source_for_dynamic(self) -> TariffConfig:
        dynamic = PriceKind.DYNAMIC in (self.import_price.kind, self.export_price.kind)
        if dynamic and self.source.kind is PriceSourceKind.NONE:
            raise ValueError("source: a dynamic import or export price needs a price source (source.kind)")
        if self.source.kind is PriceSourceKind.OCTOPUS and self.currency != "GBP":
            raise ValueError(f"currency: Octopus Agile prices are in GBP (p/kWh); set currency: GBP (got {self.currency})")
        return self

    @property
    def needs_spot(self) -> bool:
        return PriceKind.DYNAMIC in (self.import_price.kind, self.export_price.kind)
