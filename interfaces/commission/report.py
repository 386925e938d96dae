"""The report of a commissioning run, from what it recorded: each step fitted (ems/stepfit.py), the
medians, the meter's verdict, the sign checks, the config it suggests, and the samples themselves."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from ems.commission import Check, CommissionParams, StepResult, fit_dict, refresh_period_s, sign_checks, suggested_config, summarize
from ems.context.commission import RunState
from ems.jsonable import jsonable
from ems.model import Quantity
from ems.stepfit import StepFit, fit_response
from interfaces.commission.recorder import Recorder, command_changes

__all__ = ["PRE_STEP_S", "RunFacts", "StepRecord", "build_report", "max_dead_s"]

Q = Quantity
PRE_STEP_S = 1.0  # samples before a step that its fit sees


@dataclass(slots=True)
class StepRecord:
    """A step as the run made it."""

    index: int
    from_w: float
    to_w: float
    at_s: float  # the command change (publish time; the ESS link writes it at once)
    end_s: float | None = None  # None: the run ended during this step
    ess_before_w: float = 0.0


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the report says of the run besides its measurements."""

    run: int
    who: str
    site_id: str
    profile: object
    params: CommissionParams
    planned: tuple[float, ...]
    notes: tuple[str, ...]
    checks: tuple[Check, ...]
    started_s: float
    started_at: str  # ISO wall time
    ended_s: float
    rest_s: float  # since when the battery was at rest at 0 W before the first step


def max_dead_s(steps: Sequence[StepRecord], step: StepRecord, *, limit_s: float) -> float:
    """The dead time a step's fit may find: less than the time since the step before it (see fit_response)."""
    prev = next((s.at_s for s in reversed(steps) if s.at_s < step.at_s), None)
    gap_s = math.inf if prev is None else step.at_s - prev - 0.5
    return max(0.0, min(limit_s, gap_s))


def _mean(rec: Recorder, q: Quantity, since_s: float, until_s: float) -> float | None:
    xs = [v for _t, v in rec.series(q, since_s=since_s, until_s=until_s)]
    return statistics.fmean(xs) if xs else None


def _fit(rec: Recorder, q: Quantity, since_s: float, until_s: float, changes: list[tuple[float, float]], dead_s: float) -> StepFit | None:
    return fit_response(changes, rec.series(q, since_s=since_s, until_s=until_s), max_dead_time_s=dead_s)


def _results(rec: Recorder, steps: Sequence[StepRecord], facts: RunFacts) -> list[StepResult]:
    out: list[StepResult] = []
    for k, s in enumerate(steps):
        nxt = steps[k + 1].at_s if k + 1 < len(steps) else None
        until_s = nxt if nxt is not None else (s.end_s if s.end_s is not None else facts.ended_s)
        if s.end_s is None:  # the run ended during this step: no fit of a response that may have been cut short
            out.append(StepResult(s.index, s.from_w, s.to_w, s.at_s, round(until_s - s.at_s, 2), None, None))
            continue
        changes = command_changes(rec.commands(), since_s=facts.rest_s, until_s=until_s)
        dead_s = max_dead_s(steps, s, limit_s=facts.params.no_response_s)

        before = _mean(rec, Q.BMS_CURRENT_A, s.at_s - PRE_STEP_S, s.at_s)
        after = _mean(rec, Q.BMS_CURRENT_A, until_s - 1.0, until_s)
        counts = {q.value: len(rec.series(q, since_s=s.at_s - PRE_STEP_S, until_s=until_s)) for q in (Q.ESS_POWER_W, Q.GRID_POWER_W)}
        out.append(
            StepResult(
                s.index,
                s.from_w,
                s.to_w,
                s.at_s,
                round(until_s - s.at_s, 2),
                _fit(rec, Q.ESS_POWER_W, s.at_s - PRE_STEP_S, until_s, changes, dead_s),
                _fit(rec, Q.GRID_POWER_W, s.at_s - PRE_STEP_S, until_s, changes, dead_s),
                None if before is None or after is None else round(after - before, 2),
                counts,
            )
        )
    return out


def _step_dict(r: StepResult) -> dict[str, object]:
    return {
        "index": r.index,
        "from_w": r.from_w,
        "to_w": r.to_w,
        "held_s": r.held_s,
        "ess": fit_dict(r.ess),
        "grid": fit_dict(r.grid),
        "bms_current_change_a": r.bms_current_change_a,
        "samples": dict(r.samples),
    }


def _series(rec: Recorder, t0: float) -> dict[str, object]:
    """The recorded samples (s since the run started, W), for plots and a second look."""

    def pts(xs: Sequence[tuple[float, float]]) -> list[list[float]]:
        return [[round(t - t0, 3), round(v, 1)] for t, v in xs]

    return {
        "t0": "run start",
        "commands_w": pts([(c.at_s, c.written_w) for c in rec.commands()]),
        **{q.value: pts(rec.series(q)) for q in (Q.ESS_POWER_W, Q.GRID_POWER_W)},
    }


def build_report(
    rec: Recorder, steps: Sequence[StepRecord], facts: RunFacts, *, state: RunState, reason: str | None, end: Mapping[str, object]
) -> dict[str, object]:
    results = _results(rec, steps, facts)
    ess = rec.series(Q.ESS_POWER_W)
    summary = summarize(results, meter_refresh_s=refresh_period_s(rec.series(Q.GRID_POWER_W)))
    keys, lines = suggested_config(summary) if state is RunState.DONE else ({}, ())
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ess)]
    return {
        "run": facts.run,
        "who": facts.who,
        "site": facts.site_id,
        "profile": facts.profile,
        "result": state.value,
        "reason": reason,
        "started_at": facts.started_at,
        "duration_s": round(facts.ended_s - facts.started_s, 1),
        "params": jsonable(asdict(facts.params)),
        "steps_planned": list(facts.planned),
        "notes": list(facts.notes),
        "poll_period_s": round(statistics.median(gaps), 3) if gaps else None,
        "checks": [jsonable(asdict(c)) for c in (*facts.checks, *sign_checks(results))],
        "steps": [_step_dict(r) for r in results],
        **summary,
        "suggested_config": keys,
        "suggested_yaml": list(lines),
        "end": dict(end),
        "series": _series(rec, facts.started_s),
    }
