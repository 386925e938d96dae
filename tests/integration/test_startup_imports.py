"""Pi-sized start-up: building every part of `make run`'s config (config/sim.yaml: Modbus, CAN, MQTT,
store, API, the commissioner) loads none of the heavy libraries. numpy, highspy and pyarrow belong
to the threads that need them (the planner, the first commissioning fit, a Parquet export), requests
to the planner's price and forecast sources. Checked in a fresh interpreter, since this test process
has them loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.common import REPO_ROOT

HEAVY = ("numpy", "highspy", "pyarrow", "requests", "scipy", "pandas")

PROBE = """
import json, sys
from config import load_config
from ems.clock import SystemClock
from ems.context import EMSContext
from main import build_services

cfg = load_config(sys.argv[1])
clock = SystemClock()
services = build_services(cfg, EMSContext(clock=clock), clock)
print(json.dumps({"services": [s.name for s in services],
                  "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))}))
"""


def test_make_run_parts_load_no_heavy_library(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO_ROOT / "config" / "sim.yaml").read_text())
    cfg["store"]["path"] = str(tmp_path / "ems.db")
    path = tmp_path / "ems.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "EMS_DEMO_OPERATOR_TOKEN": "t" * 32, "EMS_DEMO_MQTT_PASSWORD": "demo-password"}  # make run sets these
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), ",".join(HEAVY)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"api", "store", "mqtt", "commission"} <= set(out["services"])  # the parts that used to pull them in were built
    assert out["heavy"] == []
