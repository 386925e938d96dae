"""The body of a price push (REST `PUT /api/v1/prices`, MQTT `<base>/cmd/prices`): one model, two transports.

Two forms, exactly one per push:
- `points`: a list of {start, end, price_eur_per_kwh} (ISO 8601 times with an offset);
- a series: `start`, `resolution_s` (900, 1800 or 3600) and `prices_eur_per_kwh` (a day-ahead curve).
Prices are the *spot* prices of the tariff (its formula turns them into import and export prices;
for final prices use a dynamic side with the identity formula). `ems.prices.check_points` has the
last word (no overlaps, sane magnitudes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from config.planner import PlannerConfig
from config.tariff import TariffConfig
from ems.prices import MAX_PRICE_EUR_PER_KWH, PricePoint

__all__ = ["MAX_PUSH_POINTS", "MAX_PUSH_PRICES", "PricesPush", "PushedPoint", "push_refused"]

MAX_PUSH_POINTS = 100  # one local day of quarter-hours (25 h on the autumn DST day); keeps a body under api.max_body_bytes
MAX_PUSH_PRICES = 200  # two days of quarter-hours as a series

SpotPrice = Annotated[float, Field(ge=-MAX_PRICE_EUR_PER_KWH, le=MAX_PRICE_EUR_PER_KWH, allow_inf_nan=False)]


def _unix(t: datetime) -> int:
    return round(t.timestamp())


class PushedPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: AwareDatetime = Field(description="start of the interval, ISO 8601 with an offset, e.g. 2026-03-02T00:00:00+01:00")
    end: AwareDatetime = Field(description="end of the interval (exclusive)")
    price_eur_per_kwh: SpotPrice = Field(description="spot price, per kWh in the tariff's currency")


# JSON Schema of the two forms, so a generated or hand-written body is checked by the schema alone
_ONE_FORM = {
    "oneOf": [
        {"required": ["points"], "not": {"anyOf": [{"required": ["start"]}, {"required": ["prices_eur_per_kwh"]}]}},
        {"required": ["start", "prices_eur_per_kwh"], "not": {"required": ["points"]}},
    ]
}


class PricesPush(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_ONE_FORM)

    # Not Optional in the schema (null is not a value here): a missing field is None, an explicit null is refused
    points: Annotated[list[PushedPoint], Field(min_length=1, max_length=MAX_PUSH_POINTS)] = Field(
        None,  # type: ignore[assignment]
        description="intervals with their price",
    )
    start: AwareDatetime = Field(
        None,  # type: ignore[assignment]
        description="series: start of the first interval, ISO 8601 with an offset",
    )
    resolution_s: Literal[900, 1800, 3600] = Field(3600, description="series: length of each interval, s")
    prices_eur_per_kwh: Annotated[list[SpotPrice], Field(min_length=1, max_length=MAX_PUSH_PRICES)] = Field(
        None,  # type: ignore[assignment]
        description="series: one spot price per interval, per kWh in the tariff's currency",
    )

    @model_validator(mode="after")
    def _one_form(self) -> PricesPush:
        series = self.start is not None or self.prices_eur_per_kwh is not None
        if (self.points is not None) == series:
            raise ValueError("give either points, or start with prices_eur_per_kwh (a series)")
        if series and (self.start is None or self.prices_eur_per_kwh is None):
            raise ValueError("a series needs both start and prices_eur_per_kwh")
        return self

    def to_points(self) -> tuple[PricePoint, ...]:
        if self.points is not None:
            return tuple(PricePoint(_unix(p.start), _unix(p.end), p.price_eur_per_kwh) for p in self.points)
        assert self.start is not None and self.prices_eur_per_kwh is not None
        t0, step = _unix(self.start), self.resolution_s
        return tuple(PricePoint(t0 + i * step, t0 + (i + 1) * step, v) for i, v in enumerate(self.prices_eur_per_kwh))


def push_refused(planner: PlannerConfig, tariff: TariffConfig) -> str | None:
    """Why a push would not be used (REST answers 409, MQTT "refused"), None when the planner takes it."""
    if not planner.enabled:
        return "planner.enabled is false"
    if not tariff.needs_spot:
        return "the tariff has no dynamic side (tariff.import_price / export_price), so spot prices are not used"
    return None
