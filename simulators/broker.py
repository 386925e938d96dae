"""Start a private mosquitto on 127.0.0.1 for the demo (`make run`) and the tests.

The broker gets a temporary config: `listener PORT 127.0.0.1`, `allow_anonymous false`, a password
file made with `mosquitto_passwd`, an ACL file, no persistence, optional TLS. `stop()` and
`start()` again keep the port, so a test can restart the broker under a running client.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from config.mqtt import MqttConfig

__all__ = ["BrokerError", "BrokerTls", "LocalBroker", "demo_acl", "demo_broker", "find_mosquitto", "start_broker_for", "start_local_broker"]

_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin")


log = structlog.get_logger("simulators.broker")


class BrokerError(RuntimeError):
    """mosquitto is missing or did not come up."""


@dataclass(frozen=True, slots=True)
class BrokerTls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


def find_mosquitto() -> tuple[str, str] | None:
    """(mosquitto, mosquitto_passwd) paths, or None when either is missing (Debian package: mosquitto)."""
    found = []
    for name in ("mosquitto", "mosquitto_passwd"):
        path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SEARCH))
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """One mosquitto process on loopback; a port and a config that survive restarts."""

    host = "127.0.0.1"

    def __init__(
        self, *, workdir: Path, port: int, users: Mapping[str, str], acl: str, tls: BrokerTls | None = None, allow_anonymous: bool = False
    ) -> None:
        tools = find_mosquitto()
        if tools is None:
            raise BrokerError("mosquitto not found (Debian: apt-get install mosquitto)")
        self._mosquitto, passwd = tools
        self.port = port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        pw_file, acl_file = workdir / "passwd", workdir / "acl"
        pw_file.write_text("", encoding="utf-8")
        pw_file.chmod(0o600)
        for user, password in users.items():
            subprocess.run([passwd, "-b", str(pw_file), user, password], check=True, capture_output=True, timeout=10)
        acl_file.write_text(acl, encoding="utf-8")
        lines = [
            f"listener {port} {self.host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"password_file {pw_file}",
            f"acl_file {acl_file}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # run as whoever we are: as root, mosquitto would otherwise switch to a user that cannot read workdir
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                f"require_certificate {'true' if tls.require_certificate else 'false'}",
            ]
        self.config_file = workdir / "mosquitto.conf"
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.log_file = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts TCP connections."""
        if self.running:
            return
        log = self.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self._mosquitto, "-c", str(self.config_file)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        pause = threading.Event()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(
                        f"mosquitto did not listen on {self.host}:{self.port} within {timeout_s} s: {self.log_tail()}"
                    ) from None
                pause.wait(0.05)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_local_broker(
    *, workdir: Path, users: Mapping[str, str], acl: str, port: int = 0, tls: BrokerTls | None = None, allow_anonymous: bool = False
) -> LocalBroker:
    """Write the config into `workdir`, start mosquitto on 127.0.0.1:`port` (0 = a free port), return it."""
    broker = LocalBroker(workdir=workdir, port=port or free_port(), users=users, acl=acl, tls=tls, allow_anonymous=allow_anonymous)
    broker.start()
    return broker


def demo_acl(cfg: MqttConfig, *, ems_user: str, base_topic: str, operator: str | None) -> str:
    """Least privilege, as the tests' broker has: the EMS owns its topics and discovery and reads its
    ingest topics; the operator may command and read the EMS; nobody else (no anonymous clients)."""
    ems = [f"topic readwrite {base_topic}/#", f"topic readwrite {cfg.discovery.prefix}/#"]
    ems += [f"topic read {t}" for t in dict.fromkeys(i.topic for i in cfg.ingest)]
    out = f"user {ems_user}\n" + "\n".join(ems) + "\n"
    if operator is not None:
        out += f"\nuser {operator}\ntopic write {base_topic}/cmd/#\ntopic read {base_topic}/#\n"
    return out


def start_broker_for(cfg: MqttConfig, *, workdir: Path, base_topic: str, operator_password: str | None = None) -> LocalBroker:
    """The `make run` demo broker on 127.0.0.1:`cfg.port`: the EMS user (from `cfg`, password resolved)
    and, with `operator_password`, a user `operator`, each with the ACL of `demo_acl`; anonymous
    clients are refused. Raises BrokerError (no user or password in `cfg`, mosquitto missing, port busy)."""
    if cfg.username is None or cfg.password is None or not cfg.password.value:
        raise BrokerError("mqtt.username and mqtt.password are needed: the demo broker lets no anonymous client in")
    users = {cfg.username: cfg.password.value}
    if operator_password:
        users["operator"] = operator_password
    acl = demo_acl(cfg, ems_user=cfg.username, base_topic=base_topic, operator="operator" if operator_password else None)
    return start_local_broker(workdir=workdir, users=users, acl=acl, port=cfg.port)


@contextmanager
def demo_broker(cfg: MqttConfig, *, base_topic: str, operator_password: str | None = None) -> Iterator[LocalBroker | None]:
    """For `make run`: a local mosquitto for the EMS config while the block runs, in a temporary
    directory (`start_broker_for`). Yields None (and logs why) when MQTT is off, the broker is not
    on loopback, the config has no user and password, or mosquitto cannot start, so the demo goes on
    without it."""
    if not cfg.enabled or cfg.host not in ("127.0.0.1", "localhost"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ems-mosquitto-") as tmp:
        try:
            broker = start_broker_for(cfg, workdir=Path(tmp), base_topic=base_topic, operator_password=operator_password)
        except (BrokerError, OSError, subprocess.SubprocessError) as exc:
            log.warning("mqtt_demo_broker_unavailable", reason=str(exc)[:300], hint="apt-get install mosquitto")
            yield None
            return
        log.info("mqtt_demo_broker_started", host=broker.host, port=broker.port)
        try:
            yield broker
        finally:
            broker.stop()
