"""Config: typed, validated, env overrides, secrets only from env/file, bad files exit 2 naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from config import ConfigError, load_config, parse_config
from config.common import SecretRef
from tests.helpers.common import PYTHON, REPO_ROOT


def problems(raw: dict[str, object], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env or {})
    return [str(p) for p in info.value.problems]


def test_defaults_are_safe() -> None:
    cfg = parse_config({}, {})
    assert cfg.control.enabled is False and cfg.control.dry_run is True and cfg.control.live is False


def test_unknown_key_is_rejected_with_its_path() -> None:
    assert problems({"control": {"soc_mni_pct": 5}}) == [
        "control.soc_mni_pct: unknown key (check the spelling; see config/ems.example.yaml)"
    ]


def test_wrong_type_names_key_and_value() -> None:
    (p,) = problems({"control": {"period_s": "fast"}})
    assert p.startswith("control.period_s: ") and "'fast'" in p


def test_soc_window_order_is_checked() -> None:
    assert problems({"control": {"soc_min_pct": 90, "soc_max_pct": 80}}) == [
        "control.soc_min_pct: must be < control.soc_max_pct (got 90 >= 80)"
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    assert len(problems({"control": {"gain": -1, "deadband_w": "x"}, "site": {"id": "bad id!"}})) == 3


def test_environment_overrides_nested_keys_with_yaml_values() -> None:
    cfg = parse_config(
        {"control": {"soc_min_pct": 20}}, {"EMS_CONTROL__SOC_MIN_PCT": "15", "EMS_CONTROL__ENABLED": "true", "EMS_TOKEN": "ignored"}
    )
    assert cfg.control.soc_min_pct == 15.0 and cfg.control.enabled is True


def test_bad_environment_override_names_the_key() -> None:
    assert problems({}, {"EMS_CONTROL__NOPE": "1"}) == ["control.nope: unknown key (check the spelling; see config/ems.example.yaml)"]


def test_secret_from_env_or_file_never_inline(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert SecretRef(env="EMS_T").resolve({"EMS_T": "abc"}).value == "abc"
    assert SecretRef(file=token_file).resolve({}).value == "s3cret"
    with pytest.raises(ValueError, match="only from the environment or a file"):
        SecretRef.model_validate("plain-token")
    with pytest.raises(ValueError, match="EMS_MISSING is not set"):
        SecretRef(env="EMS_MISSING").resolve({})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("control:\n  enabled: [true\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line"):
        load_config(bad, {})


def test_example_config_loads_and_documents_every_control_key() -> None:
    cfg = load_config(REPO_ROOT / "config" / "ems.example.yaml", {})
    text = (REPO_ROOT / "config" / "ems.example.yaml").read_text()
    for key in type(cfg.control).model_fields:
        assert f"  {key}:" in text, f"control.{key} missing from config/ems.example.yaml"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("control:\n  enabeld: true\n", "config error: control.enabeld: unknown key"),
        ("control:\n  recover_s: soon\n", "config error: control.recover_s: Input should be a valid number"),
        (
            "control:\n  soc_min_pct: 90\n  soc_max_pct: 80\n",
            "config error: control.soc_min_pct: must be < control.soc_max_pct (got 90 >= 80)",
        ),
        (None, "config error: cannot read config file"),
    ],
    ids=["unknown-key", "wrong-type", "soc-order", "missing-file"],
)
def test_main_exits_2_with_key_path_and_reason(tmp_path: Path, yaml_text: str | None, expected: str) -> None:
    path = tmp_path / "ems.yaml"
    if yaml_text is not None:
        path.write_text(yaml_text)
    r = subprocess.run([PYTHON, "main.py", "--config", str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert expected in r.stderr, r.stderr
    assert "not starting" in r.stderr


def test_can_beside_modbus_needs_no_ignore_points_the_bms_owns_the_battery_readings() -> None:
    """The old rule (list the inverter's battery readings in ignore_points) is gone: readings have
    owners (ems/context/readings.py), and the inverter's copies yield to the CAN BMS at start-up."""
    cfg = parse_config(
        {
            "can": {"enabled": True},
            "modbus": {"enabled": True},
            "control": {"required_sources": ["grid_power_w", "ess_power_w", "soc_pct", "bms_voltage_v", "bms_ccl_a", "bms_dcl_a"]},
        },
        {},
    )
    assert cfg.can.enabled and cfg.modbus.ess.ignore_points == ()


def test_devices_sharing_one_rs485_line_need_its_settings_and_their_own_unit_ids() -> None:
    rtu = {"transport": "rtu", "serial_port": "/dev/ttyUSB0"}
    assert problems({"modbus": {"ess": rtu, "meter": {**rtu, "baudrate": 19200}}}) == [
        "modbus.meter: on the serial port modbus.ess uses, baudrate, parity and stopbits must match modbus.ess"
    ]
    assert problems({"modbus": {"ess": rtu, "pv": {**rtu, "enabled": True, "device_id": 1}}}) == [
        "modbus.pv: device_id 1 is modbus.ess's on the same serial line"
    ]
    # grid meter (unit 2) and PV meter (unit 3) on one line with the same settings: fine; a disabled device never clashes
    cfg = parse_config({"modbus": {"meter": rtu, "pv": {**rtu, "enabled": True}, "ess": {**rtu, "enabled": False, "device_id": 2}}}, {})
    assert (cfg.modbus.meter.device_id, cfg.modbus.pv.device_id, cfg.modbus.pv.map) == (2, 3, "sdm630_pv")


def test_the_planner_is_off_by_default_and_takes_its_battery_limits_from_control() -> None:
    cfg = parse_config({"control": {"soc_min_pct": 20, "soc_max_pct": 90, "max_charge_w": 3000, "max_import_w": 9000}}, {})
    b, g = cfg.planner.battery, cfg.planner.grid
    assert cfg.planner.enabled is False and cfg.tariff.source.kind.value == "none"
    assert (b.soc_min_pct, b.soc_max_pct, b.max_charge_w, b.max_discharge_w) == (20.0, 90.0, 3000.0, 5000.0)
    assert g.import_max_w == 9000.0 and g.export_max_w is None


def test_a_planner_value_given_explicitly_wins_over_control() -> None:
    cfg = parse_config({"control": {"soc_min_pct": 20}, "planner": {"battery": {"soc_min_pct": 30}}}, {})
    assert cfg.planner.battery.soc_min_pct == 30.0


def test_the_enabled_planner_may_only_be_narrower_than_the_loop_and_the_error_names_both_keys() -> None:
    on = {"enabled": True}
    store = {"enabled": True}
    assert problems({"planner": {**on, "battery": {"soc_min_pct": 5}}, "store": store}) == [
        "planner.battery.soc_min_pct: must be >= control.soc_min_pct (got 5 < 10; the loop does not discharge below it)"
    ]
    assert problems({"planner": {**on, "battery": {"max_discharge_w": 8000}}, "store": store}) == [
        "planner.battery.max_discharge_w: must be <= control.max_discharge_w (got 8000 > 5000)"
    ]
    assert problems({"planner": {**on, "replan_s": 3600, "max_plan_age_s": 1800}, "store": store}) == [
        "planner.max_plan_age_s: must be > planner.replan_s (got 1800 <= 3600; a plan would lapse before the next one)"
    ]
    (p,) = problems({"planner": on})
    assert p.startswith("planner.enabled: needs store.enabled: true")


def test_push_is_a_price_source_for_a_dynamic_tariff() -> None:
    cfg = parse_config(
        {"tariff": {"import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14}}, "source": {"kind": "push"}}}, {}
    )
    assert cfg.tariff.needs_spot and cfg.tariff.source.kind.value == "push"
    (p,) = problems({"tariff": {"import_price": {"kind": "dynamic"}}})
    assert p.startswith("tariff.source: a dynamic import or export price needs a price source")


def test_the_mqtt_uplink_needs_a_broker_its_own_password_and_tls() -> None:
    env = {"K": "key", "PW": "pw"}
    store = {"enabled": True}
    base = {"enabled": True, "transport": "mqtt", "hmac_key": {"env": "K"}}
    assert problems({"uplink": base, "store": store}, env) == ["uplink.mqtt.host: required with uplink.transport mqtt"]
    with_host = {**base, "mqtt": {"host": "broker.example", "password": {"env": "PW"}, "tls": {"enabled": False}}}
    assert problems({"uplink": with_host, "store": store}, env) == [
        "uplink.mqtt.tls.enabled: must be true with uplink.transport mqtt (batches travel only over verified TLS)"
    ]
    ok = parse_config({"uplink": {**base, "mqtt": {"host": "broker.example", "password": {"env": "PW"}}}, "store": store}, env)
    assert ok.uplink.mqtt.tls.enabled and ok.uplink.mqtt.password is not None and ok.uplink.mqtt.password.value == "pw"
    assert problems(
        {"uplink": {**base, "mqtt": {"host": "b", "password": {"env": "PW"}}, "commands": {"enabled": True}}, "store": store}, env
    ) == ["uplink.commands.enabled: the command queue needs uplink.transport https (not available over mqtt yet)"]


def test_config_check_reports_every_problem_at_once_cross_checks_and_secrets_too() -> None:
    # a section's cross-check (the SOC window) next to a bad field of the same section
    assert problems({"control": {"soc_min_pct": 90, "soc_max_pct": 50, "gain": "abc"}}) == [
        "control.gain: Input should be a valid number, unable to parse string as a number (got 'abc')",
        "control.soc_min_pct: must be < control.soc_max_pct (got 90 >= 50)",
    ]
    # the root's cross-checks (sections against each other) and the secrets, next to a bad field elsewhere
    assert problems(
        {"can": {"enabled": True}, "api": {"port": "x", "tokens": [{"name": "a", "role": "operator", "secret": {"env": "NOPE"}}]}}
    ) == [
        "api.port: Input should be a valid integer, unable to parse string as an integer (got 'x')",
        "control.required_sources: with can.enabled, add bms_voltage_v, bms_ccl_a, bms_dcl_a (a silent BMS must mean FAULT; see docs/can.md)",
        "api.tokens.0.secret: environment variable NOPE is not set or empty",
    ]
    # a check that would only be about the default standing in for a bad value is not invented
    assert problems({"control": {"soc_min_pct": 96, "soc_max_pct": "x"}}) == [
        "control.soc_max_pct: Input should be a valid number, unable to parse string as a number (got 'x')"
    ]
