"""The step-response fit of commissioning (ems/stepfit.py): synthetic first-order-plus-dead-time
responses, with noise, quantisation, jittered sample times and poll delays, give back their time
constant and dead time within 20 % (most within a few %), a ramp only where there is one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ems.stepfit import fit_response, model_response

STEP = [(0.0, 0.0), (1.0, 1000.0)]


def _samples(
    changes: list[tuple[float, float]],
    *,
    dead_s: float,
    tau_s: float,
    ramp_w_per_s: float | None = None,
    gain: float = 1.0,
    offset_w: float = 0.0,
    noise_w: float = 0.0,
    quant_w: float = 0.0,
    poll_s: float = 0.1,
    jitter_s: float = 0.0,
    age_s: float = 0.0,
    span_s: float = 15.0,
    seed: int = 1,
) -> list[tuple[float, float]]:
    """What a poll sees: each value was true `age_s` before it was received (at its receive time)."""
    rng = np.random.default_rng(seed)
    t_rx = np.arange(0.0, span_s, poll_s) + rng.uniform(0.0, jitter_s, math.ceil(span_s / poll_s))[: math.ceil(span_s / poll_s)]
    y = offset_w + gain * model_response(changes, t_rx - age_s, dead_time_s=dead_s, tau_s=tau_s, ramp_w_per_s=ramp_w_per_s)
    y = y + rng.normal(0.0, noise_w, t_rx.size) if noise_w else y
    if quant_w:
        y = np.round(y / quant_w) * quant_w
    return [(float(t), float(v)) for t, v in zip(t_rx, y, strict=True)]


@pytest.mark.parametrize(
    ("dead_s", "tau_s"),
    [(0.0, 1.0), (0.5, 1.0), (1.0, 2.0), (2.0, 2.0), (1.0, 3.0), (0.3, 0.3), (4.0, 1.5)],
)
@pytest.mark.parametrize(("noise_w", "quant_w"), [(0.0, 0.0), (10.0, 0.0), (5.0, 10.0), (30.0, 1.0)])
def test_a_first_order_plus_dead_time_step_is_recovered_within_20_percent(
    dead_s: float, tau_s: float, noise_w: float, quant_w: float
) -> None:
    samples = _samples(STEP, dead_s=dead_s, tau_s=tau_s, noise_w=noise_w, quant_w=quant_w, jitter_s=0.02, span_s=1.0 + dead_s + 6 * tau_s)
    fit = fit_response(STEP, samples)
    assert fit is not None
    assert abs(fit.tau_s - tau_s) <= 0.2 * tau_s, fit
    assert abs(fit.dead_time_s - dead_s) <= max(0.2 * dead_s, 0.05), fit
    assert abs(fit.gain - 1.0) <= 0.03 and fit.ramp_w_per_s is None and fit.settled, fit
    assert fit.r2 > 0.95


def test_the_fit_is_much_better_than_20_percent_on_clean_data() -> None:
    fit = fit_response(STEP, _samples(STEP, dead_s=0.7, tau_s=1.3, noise_w=2.0, quant_w=1.0))
    assert fit is not None
    assert fit.tau_s == pytest.approx(1.3, rel=0.03) and fit.dead_time_s == pytest.approx(0.7, abs=0.03)


def test_a_sample_received_late_reads_as_more_dead_time_not_a_different_tau() -> None:
    """The EMS times a sample when it arrives: a value 0.2 s old at arrival adds 0.2 s to the dead time."""
    fit = fit_response(STEP, _samples(STEP, dead_s=1.0, tau_s=2.0, age_s=0.2, noise_w=5.0))
    assert fit is not None
    assert fit.dead_time_s == pytest.approx(1.2, abs=0.05) and fit.tau_s == pytest.approx(2.0, rel=0.05)


def test_gain_and_offset_come_out_of_the_same_fit() -> None:
    fit = fit_response(STEP, _samples(STEP, dead_s=0.5, tau_s=1.0, gain=-0.97, offset_w=1500.0, noise_w=8.0))
    assert fit is not None
    assert fit.gain == pytest.approx(-0.97, abs=0.01) and fit.offset_w == pytest.approx(1500.0, abs=10.0)


@pytest.mark.parametrize(("ramp", "tau_s", "dead_s"), [(200.0, 0.5, 0.3), (400.0, 1.0, 1.0), (100.0, 0.2, 0.0)])
def test_a_rate_limited_response_is_found_with_its_ramp(ramp: float, tau_s: float, dead_s: float) -> None:
    """Through a ramp much longer than tau, a lag looks like more dead time: their sum is what is measured."""
    span = 1.0 + dead_s + 1000.0 / ramp + 6 * tau_s
    fit = fit_response(STEP, _samples(STEP, dead_s=dead_s, tau_s=tau_s, ramp_w_per_s=ramp, noise_w=5.0, span_s=span))
    assert fit is not None
    assert fit.ramp_w_per_s == pytest.approx(ramp, rel=0.1), fit
    assert fit.dead_time_s + fit.tau_s == pytest.approx(dead_s + tau_s, rel=0.2), fit


def test_no_ramp_is_reported_where_there_is_none_even_with_noise_and_quantisation() -> None:
    for seed in range(5):
        fit = fit_response(STEP, _samples(STEP, dead_s=0.4, tau_s=0.8, noise_w=20.0, quant_w=10.0, seed=seed))
        assert fit is not None and fit.ramp_w_per_s is None, (seed, fit)


def test_every_change_of_a_staircase_command_counts() -> None:
    """The EMS's own ramp limit writes a staircase: the model drives the plant with every stair."""
    stairs = [(0.0, 0.0), (1.0, 300.0), (1.5, 600.0), (2.0, 900.0), (2.5, 1000.0)]
    fit = fit_response(stairs, _samples(stairs, dead_s=0.6, tau_s=1.2, noise_w=5.0))
    assert fit is not None
    assert fit.tau_s == pytest.approx(1.2, rel=0.05) and fit.dead_time_s == pytest.approx(0.6, abs=0.05) and fit.ramp_w_per_s is None


def test_a_step_back_is_fitted_with_the_history_that_led_to_it() -> None:
    """Steps +1000 then 0 W: the window of the second step still sees the first one's tail."""
    changes = [(0.0, 0.0), (1.0, 1000.0), (6.0, 0.0)]
    samples = [p for p in _samples(changes, dead_s=0.8, tau_s=1.0, noise_w=5.0, span_s=14.0) if p[0] >= 5.0]
    fit = fit_response(changes, samples, max_dead_time_s=4.0)
    assert fit is not None
    assert fit.gain == pytest.approx(1.0, abs=0.02) and fit.tau_s == pytest.approx(1.0, rel=0.05)
    assert fit.dead_time_s == pytest.approx(0.8, abs=0.05)


def test_an_unsettled_window_says_so() -> None:
    fit = fit_response(STEP, _samples(STEP, dead_s=0.5, tau_s=3.0, span_s=5.0, noise_w=2.0))
    assert fit is not None and not fit.settled


def test_no_fit_without_a_change_or_with_too_few_samples() -> None:
    assert fit_response([(0.0, 0.0)], _samples(STEP, dead_s=0.0, tau_s=1.0)) is None
    assert fit_response(STEP, _samples(STEP, dead_s=0.0, tau_s=1.0)[:5]) is None
    assert fit_response(STEP, [(t, 7.0) for t in np.arange(0.0, 5.0, 0.1)]) is None  # flat: nothing to explain


def test_the_quick_fit_is_close_enough_to_decide_settling() -> None:
    fit = fit_response(STEP, _samples(STEP, dead_s=1.0, tau_s=2.0, noise_w=5.0), quick=True)
    assert fit is not None and fit.ramp_w_per_s is None
    assert fit.tau_s == pytest.approx(2.0, rel=0.1) and fit.dead_time_s == pytest.approx(1.0, abs=0.15)


def test_model_response_is_a_first_order_lag_after_the_dead_time() -> None:
    t = np.array([0.5, 1.0, 1.5, 2.5, 3.5])
    y = model_response(STEP, t, dead_time_s=0.5, tau_s=1.0)
    assert y[:2] == pytest.approx([0.0, 0.0])
    assert y[2:] == pytest.approx([1000 * (1 - math.exp(-k)) for k in (0.0, 1.0, 2.0)], abs=1e-2)
    ramped = model_response(STEP, np.array([1.0, 2.0, 3.0, 30.0]), dead_time_s=0.0, tau_s=1e-6, ramp_w_per_s=500.0)
    assert ramped == pytest.approx([0.0, 500.0, 1000.0, 1000.0], abs=1e-3)
