"""The cloud command queue end to end: the real main.py (store, uplink with uplink.commands, API) and the
reference receiver as a program (its own test CA); a command queued over the receiver's admin endpoint
runs in the EMS through the audited request path (who cloud:<issuer>, via cloud)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.common import free_port, wait_for
from tests.helpers.proc import LoggedProcess, stop_all
from tests.helpers.ui import TOKEN_ENV, api_section

pytestmark = pytest.mark.system

SITE = "cloud-site"
SECRETS = {"EMS_UPLINK_TOKEN": "sys-token", "EMS_UPLINK_HMAC_KEY": "sys-hmac-key-0123", "EMS_UPLINK_ADMIN_TOKEN": "sys-admin"}


def test_a_command_queued_at_the_receiver_runs_in_the_ems_and_is_audited(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    rx = LoggedProcess(
        ["-m", "simulators.uplink_receiver", "--port", "0", "--tls-dir", str(tls), "--db", str(tmp_path / "rx.db")], env=SECRETS
    )
    ems: LoggedProcess | None = None
    try:
        url = str(rx.wait_event(lambda e: e.get("event") == "receiver_started", timeout_s=30, what="receiver_started")["url"])
        api_port = free_port()
        cfg: dict[str, Any] = {
            "site": {"id": SITE},
            "control": {"required_sources": [], "summary_interval_s": 0},
            "store": {"enabled": True, "path": str(tmp_path / "ems.db")},
            "uplink": {
                "enabled": True,
                "url": url,
                "ca_file": str(tls / "ca.pem"),
                "token": {"env": "EMS_UPLINK_TOKEN"},
                "hmac_key": {"env": "EMS_UPLINK_HMAC_KEY"},
                "commands": {"enabled": True, "poll_s": 0.5},
            },
            "api": api_section(api_port),
        }
        (tmp_path / "ems.yaml").write_text(yaml.safe_dump(cfg))
        ems = LoggedProcess(["main.py", "--config", str(tmp_path / "ems.yaml"), "--log-format", "json"], env={**SECRETS, **TOKEN_ENV})
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")

        queued = requests.post(
            url.rsplit("/", 1)[0] + f"/sites/{SITE}/commands",
            json={"kind": "setpoint", "body": {"power_w": 1200.0, "ttl_s": 300.0, "reason": "grid support"}, "issuer": "ecowatt"},
            headers={"Authorization": f"Bearer {SECRETS['EMS_UPLINK_ADMIN_TOKEN']}"},
            verify=str(tls / "ca.pem"),
            timeout=5,
        )
        assert queued.status_code == 201
        cid = queued.json()["id"]
        done = ems.wait_event(lambda e: e.get("event") == "cloud_command_accepted", timeout_s=20, what="cloud_command_accepted")
        assert done["command_id"] == cid and done["kind"] == "setpoint"
        status = requests.get(f"http://127.0.0.1:{api_port}/api/v1/status", timeout=5).json()
        assert status["requested_mode"] == "EXTERNAL" and status["external_setpoint"]["power_w"] == 1200.0
        audits = wait_for(
            lambda: [
                e
                for e in requests.get(f"http://127.0.0.1:{api_port}/api/v1/events", params={"kind": "audit"}, timeout=5).json()["events"]
                if e["data"].get("via") == "cloud"
            ],
            what="the cloud audit row",
        )
        a = audits[0]
        assert a["seq"] == done["event_seq"]
        assert (a["data"]["who"], a["data"]["what"], a["data"]["result"], a["data"]["new"]) == (
            "cloud:ecowatt",
            "setpoint",
            "accepted",
            1200.0,
        )
    finally:
        stop_all(ems, rx)
