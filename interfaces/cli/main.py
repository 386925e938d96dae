"""`emsctl`: the field engineer's command line (docs/operations.md).

Talks to the EMS REST API (docs/api.md) for status and operator requests, and checks wiring
directly (read-only Modbus, CAN through the DBC) during commissioning. Every read command takes
`--json`. The token comes from $EMSCTL_TOKEN, the file named by $EMSCTL_TOKEN_FILE or --token-file
(never from the command line); the API address from --url or $EMSCTL_URL (default http://127.0.0.1:8080).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from interfaces.cli import render
from interfaces.cli.client import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ApiClient,
    CliError,
    default_url,
    token_from,
)
from interfaces.cli.commission import add_parser as add_commission_parser

__all__ = ["main"]

_MAX_PAGES = 100  # `events` pages through at most this many pages of history
MODES = ("IDLE", "SELF_CONSUMPTION", "CHARGE_ONLY", "DISCHARGE_ONLY", "EXTERNAL")

EPILOG = """exit status: 0 ok/healthy/valid; 1 not ok (unhealthy, invalid config, undecodable frame, no SunSpec device);
2 bad command line or missing token; 3 EMS API or device unreachable; 4 token refused (401/403);
5 request refused by the API (the message names the field); 6 API error (5xx or not the EMS API).
environment: EMSCTL_URL, EMSCTL_TOKEN, EMSCTL_TOKEN_FILE."""


class _Io:
    def __init__(self, out: TextIO, err: TextIO, as_json: bool) -> None:
        self.out, self.err, self.as_json = out, err, as_json

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, sort_keys=False, default=str) + "\n")
        else:
            self.out.write((text() if callable(text) else text) + "\n")
        self.out.flush()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="EMS API base URL (default $EMSCTL_URL or http://127.0.0.1:8080)")
    common.add_argument(
        "--token-file", default=argparse.SUPPRESS, help="file holding the bearer token (default $EMSCTL_TOKEN / $EMSCTL_TOKEN_FILE)"
    )
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="request timeout, s (default 5)")
    read = argparse.ArgumentParser(add_help=False, parents=[common])
    read.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output (JSON; one object per line when streaming)"
    )

    p = argparse.ArgumentParser(
        prog="emsctl",
        description="EMS field engineer's tool",
        epilog=EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("status", parents=[read], help="one screen: state, mode, powers, SOC, command, limits, faults, device health")
    sub.add_parser("health", parents=[read], help="exit 0 when healthy, 1 when not (for scripts)")
    plan = sub.add_parser("plan", parents=[read], help="the planner's plan: one slot a line from now (prices, mode, powers, SOC)")
    plan.add_argument("--limit", type=int, default=48, metavar="N", help="slots to show (default 48 = 12 h)")
    plan.add_argument("--all", action="store_true", help="every slot of the horizon")

    mode = sub.add_parser("mode", parents=[read], help="show the mode, or `mode set NAME`")
    mode_sub = mode.add_subparsers(dest="mode_cmd", metavar="set")
    mode_set = mode_sub.add_parser("set", parents=[read], help="request a run mode (operator token)")
    mode_set.add_argument("name", type=str.upper, choices=MODES, metavar="NAME", help=" | ".join(MODES))

    sp = sub.add_parser("setpoint", parents=[read], help="external set-point (operator token): + discharge / - charge, W")
    sp.add_argument("power_w", type=float, metavar="W", help="power, W (+ discharge, - charge); limits still apply")
    sp.add_argument("--ttl", type=float, required=True, metavar="S", help="validity, s; afterwards the controller falls back")
    sp.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the audit trail)")

    rel = sub.add_parser("release", parents=[read], help="release the external set-point (operator token)")
    rel.add_argument("--mode", type=str.upper, choices=MODES, help="mode to request afterwards (default: control.external_fallback)")

    ev = sub.add_parser("events", parents=[read], help="recent events (state, fault, audit, ...); --follow to stream")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    ev.add_argument("--kind", action="append", help="only this kind (repeat): state, fault, audit, ...")
    ev.add_argument("--limit", type=int, default=50, help="how many of the latest events to show first (default 50)")
    ev.add_argument("--interval", type=float, default=1.0, help="--follow poll interval, s (default 1)")
    ev.add_argument("--since", type=float, default=86400.0, metavar="S", help="look back this many seconds (default 86400 = 1 day)")

    ex = sub.add_parser("export", parents=[read], help="download history as Parquet or CSV (streamed to a file)")
    ex.add_argument(
        "--from",
        dest="from_",
        metavar="TIME",
        help="start: unix s, ISO 8601 or -DURATION (--from=-2h, -30min, -1d); default one hour before --to",
    )
    ex.add_argument("--to", metavar="TIME", help="end (exclusive): unix s, ISO 8601 or -DURATION; default now")
    ex.add_argument("--fields", metavar="A,B", help="comma-separated fields (default all): grid_power_w,soc_pct,...")
    ex.add_argument("--resolution", choices=("1s", "1min", "5min"), default="1s", help="1s samples or 1min/5min aggregates (default 1s)")
    ex.add_argument("--format", choices=("parquet", "csv"), help="default: from the file name (.csv -> csv), else parquet")
    ex.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write (- = standard output)")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", required=True, metavar="check")
    chk = cfg_sub.add_parser(
        "check", parents=[read], help="validate a config file without starting (uses this environment for EMS_* and secrets)"
    )
    chk.add_argument("file", metavar="FILE")
    chk.add_argument("--env-file", metavar="PATH", help="also read KEY=VALUE lines from this file, as the service does (/etc/ems/ems.env)")

    add_commission_parser(sub, [read])
    devs = sub.add_parser("devices", help="the supported device profiles: name, kind, vendor, control method, keep-alive, revert")
    devs.add_argument("--json", action="store_true", help="print JSON instead of text")
    mb = sub.add_parser("modbus", help="read-only Modbus TCP wiring checks")
    mb_sub = mb.add_subparsers(dest="modbus_cmd", required=True, metavar="scan|read")
    dev = argparse.ArgumentParser(add_help=False, parents=[read])
    dev.add_argument(
        "host", metavar="HOST[:PORT]|/dev/TTY", help="TCP device or gateway (port 502 by default), or an RS-485 serial port (RTU)"
    )
    dev.add_argument("--baud", type=int, default=9600, help="RTU: baud rate (default 9600)")
    dev.add_argument("--parity", choices=("N", "E", "O"), default="N", help="RTU: parity (default N)")
    dev.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="RTU: stop bits (default 1)")
    dev.add_argument("--unit", type=int, required=True, help="Modbus unit / device id (0-247)")
    dev.add_argument("--rate", type=float, default=5.0, help="at most this many requests per second (default 5, max 20)")
    scan = mb_sub.add_parser(
        "scan",
        parents=[dev],
        help="identify the device (SunSpec models, the profiles' identification registers) and suggest profiles (read-only)",
    )
    scan.add_argument(
        "--range", dest="search", metavar="A-B", help="look for the marker at every address in A-B, at most 250 (default: 40000, 0, 50000)"
    )
    rd = mb_sub.add_parser("read", parents=[dev], help="read registers (read-only)")
    rd.add_argument("address", type=lambda s: int(s, 0), metavar="ADDRESS", help="0-based register address (e.g. 40000 or 0x9c40)")
    rd.add_argument("--count", type=int, default=1, help="registers to read (default 1; at least what --type needs)")
    rd.add_argument(
        "--type",
        default="uint16",
        choices=("uint16", "int16", "uint32", "int32", "acc32", "float32", "string"),
        help="decode as (big-endian words; default uint16)",
    )
    rd.add_argument("--input", action="store_true", help="input registers (function 4) instead of holding (3)")

    can = sub.add_parser("can", help="CAN BMS wiring checks through the DBC")
    can_sub = can.add_subparsers(dest="can_cmd", required=True, metavar="dump|decode")
    dump = can_sub.add_parser("dump", parents=[read], help="print received frames, decoded (read-only)")
    dump.add_argument("--config", help="take interface/channel/host/port from this EMS config file's can section")
    dump.add_argument("--interface", choices=("socketcan", "socketcand", "slcan", "virtual"), help="default socketcan")
    dump.add_argument("--channel", help="can0, serial port, or bus name (default can0)")
    dump.add_argument("--host", help="socketcand server (default 127.0.0.1)")
    dump.add_argument("--port", type=int, help="socketcand port (default 29536)")
    dump.add_argument("--count", type=int, help="stop after this many frames")
    dump.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a frame")
    dec = can_sub.add_parser("decode", parents=[read], help="decode one frame: ID (hex) and DATA (hex bytes)")
    dec.add_argument("id", metavar="ID", help="frame id in hex, e.g. 351 or 0x351")
    dec.add_argument("data", metavar="DATA", nargs="+", help="payload in hex, e.g. 2c01e803e8031c02 or 2c 01 e8 03")
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    io = _Io(out, err, bool(getattr(args, "json", False)))
    stop = stop or threading.Event()
    streaming = bool(getattr(args, "follow", False)) or (args.cmd == "can" and args.can_cmd == "dump") or args.cmd == "commission"
    try:
        with _ctrl_c_ends(streaming):
            return _dispatch(args, env, io, stop)
    except CliError as exc:
        err.write(f"emsctl: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "follow", False) or args.cmd == "can" else 130


@contextmanager
def _ctrl_c_ends(streaming: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) ends a stream (`events --follow`, `can dump`) normally, also when this process
    was started with SIGINT ignored (a background job of a non-interactive shell, a CI runner, a test
    under either): Python then installs no KeyboardInterrupt handler and the stream would never end.
    Only the main thread can set a handler; `main()` called from another thread has its `stop` event."""
    if not streaming or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _devices(io: _Io) -> int:
    from dataclasses import asdict

    from interfaces.modbus.devices import device_rows

    rows = device_rows()
    io.emit(
        {"devices": [asdict(r) for r in rows]},
        lambda: "\n".join(
            [f"{'profile':22} {'kind':10} {'vendor':18} {'control method':24} revert"]
            + [f"{r.name:22} {r.kind:10} {r.vendor[:18]:18} {r.method:24} {r.revert}" for r in rows]
        ),
    )
    return EXIT_OK


def _client(args: argparse.Namespace, env: Mapping[str, str]) -> ApiClient:
    token = token_from(env, getattr(args, "token_file", None))
    return ApiClient(getattr(args, "url", None) or default_url(env), token, timeout_s=getattr(args, "timeout", 5.0))


def _dispatch(args: argparse.Namespace, env: Mapping[str, str], io: _Io, stop: threading.Event) -> int:
    if args.cmd == "config":
        return _config_check(args.file, {**env, **_env_file(args.env_file)} if args.env_file else env, io)
    if args.cmd == "devices":
        return _devices(io)
    if args.cmd == "modbus":
        return _modbus(args, io)
    if args.cmd == "can":
        return _can(args, io, stop)
    api = _client(args, env)
    try:
        return _api_command(args, api, io, stop)
    finally:
        api.close()


def _api_command(args: argparse.Namespace, api: ApiClient, io: _Io, stop: threading.Event) -> int:
    if args.cmd == "export":
        return _export(args, api, io)
    if args.cmd == "commission":
        from interfaces.cli.commission import commission

        return commission(args, api, io.emit, stop, err=io.err, as_json=io.as_json)
    if args.cmd == "status":
        s = api.request("GET", "/status").body
        io.emit(s, lambda: render.status_text(s))
        return EXIT_OK
    if args.cmd == "health":
        r = api.request("GET", "/health", ok=(200, 503))
        io.emit(r.body, lambda: render.health_text(r.body))
        return EXIT_OK if r.status == 200 and r.body.get("healthy") else EXIT_FAIL
    if args.cmd == "plan":
        p = api.request("GET", "/plan").body
        io.emit(p, lambda: render.plan_text(p, limit=None if args.all else max(1, args.limit)))
        planner = p.get("planner") or {}
        return EXIT_OK if planner.get("state") in ("ok", "stale") else EXIT_FAIL
    if args.cmd == "mode" and args.mode_cmd is None:
        m = api.request("GET", "/mode").body
        sp = m.get("external_setpoint")
        io.emit(
            m,
            lambda: (
                f"requested {m['requested_mode']}, effective {m['effective_mode']}, state {m['state']}"
                + (f", set-point {sp['power_w']:+.0f} W for {render.duration(sp['remaining_s'])}" if sp else "")
            ),
        )
        return EXIT_OK
    if args.cmd == "mode":
        w = api.request("PUT", "/mode", body={"mode": args.name}, write=True).body
    elif args.cmd == "setpoint":
        w = api.request("PUT", "/setpoint", body={"power_w": args.power_w, "ttl_s": args.ttl, "reason": args.reason}, write=True).body
    elif args.cmd == "release":
        w = api.request("DELETE", "/setpoint", params={"mode": args.mode} if args.mode else None, write=True).body
    else:
        return _events(args, api, io, stop)
    io.emit(w, lambda: render.write_text(w))
    return EXIT_OK


def _events(args: argparse.Namespace, api: ApiClient, io: _Io, stop: threading.Event) -> int:
    from ems.clock import SystemClock

    params: dict[str, Any] = {"kind": args.kind} if args.kind else {}
    since = {"from_ts": max(0.0, SystemClock().wall().timestamp() - args.since)}
    after, latest = 0, list[dict[str, Any]]()
    for _ in range(_MAX_PAGES):  # page to the end (bounded); keep the last --limit
        page = api.request("GET", "/events", params={**params, **since, "after_seq": after, "limit": 1000}).body
        events = page.get("events") or []
        latest = (latest + events)[-max(1, args.limit) :]
        after = events[-1]["seq"] if events else after
        if page.get("next_after_seq") is None:
            break
    for e in latest:
        io.emit(e, render.event_line(e))
    if args.follow:  # the live stream: each event at once (interfaces/cli/follow.py), polling where there is none
        from interfaces.cli.follow import follow_events

        shown = [e["event_seq"] for e in latest if e.get("event_seq") is not None]
        follow_events(api, kinds=args.kind, after_event_seq=shown[-1] if shown else None, after_row=after,
                      emit=lambda e: io.emit(e, render.event_line(e)), stop=stop, interval_s=args.interval)  # fmt: skip
    return EXIT_OK


_DURATION_S = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _time_arg(text: str | None, now_ts: float, name: str) -> str | None:
    """`-2h`, `-30min`, `-1d` -> unix s before now; anything else goes to the API as given (unix s or ISO 8601)."""
    if text is None or not text.startswith("-"):
        return text
    num = text[1:].rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[1 + len(num) :] or "s"
    try:
        return f"{now_ts - float(num) * _DURATION_S[unit]:.3f}"
    except (ValueError, KeyError) as exc:
        raise CliError(f"{name}: {text!r} is not -N[s|min|h|d], unix seconds or an ISO 8601 time", EXIT_USAGE) from exc


def _export(args: argparse.Namespace, api: ApiClient, io: _Io) -> int:
    from ems.clock import SystemClock

    now_ts = SystemClock().wall().timestamp()
    fmt = args.format or ("csv" if args.output.lower().endswith(".csv") else "parquet")
    params = {"from": _time_arg(args.from_, now_ts, "--from"), "to": _time_arg(args.to, now_ts, "--to"), "fields": args.fields,
              "resolution": args.resolution, "format": fmt}  # fmt: skip
    params = {k: v for k, v in params.items() if v is not None}
    if args.output == "-":
        api.download("/export", params=params, out=sys.stdout.buffer)
        return EXIT_OK
    target = Path(args.output)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with tmp.open("wb") as f:
            n = api.download("/export", params=params, out=f)
        tmp.replace(target)
    except OSError as exc:
        raise CliError(f"--output: cannot write {target}: {exc.strerror or exc}", EXIT_USAGE) from exc
    finally:
        tmp.unlink(missing_ok=True)
    io.emit({"file": str(target), "bytes": n, "format": fmt, **params}, f"wrote {n} bytes of {fmt} to {target}")
    return EXIT_OK


def _env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (systemd EnvironmentFile= syntax without continuation lines); # comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--env-file: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise CliError(f"--env-file: {path}:{n}: expected KEY=VALUE", EXIT_USAGE)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _config_check(path: str, env: Mapping[str, str], io: _Io) -> int:
    from config import ConfigError, load_config

    try:
        cfg = load_config(path, env)
    except ConfigError as exc:
        lines = [f"config error: {p}" for p in exc.problems]
        problems = [{"key": p.path, "reason": p.reason} for p in exc.problems]
        io.emit(
            {"ok": False, "file": path, "problems": problems},
            "\n".join([*lines, f"{path}: {len(problems)} problem(s)"]),
        )
        return EXIT_FAIL
    parts = [name for name in ("modbus", "can", "mqtt", "store", "uplink", "api") if getattr(getattr(cfg, name), "enabled", False)]
    c = cfg.control
    sources = [q.value for q in c.required_sources]
    summary = {
        "ok": True,
        "file": path,
        "site": cfg.site.id,
        "control": {"enabled": c.enabled, "dry_run": c.dry_run, "live": c.live, "soc_min_pct": c.soc_min_pct, "soc_max_pct": c.soc_max_pct},
        "enabled": parts,
        "required_sources": sources,
    }
    live = "LIVE (non-zero commands reach the inverter)" if c.live else "not live (0 W is written)"
    io.emit(
        summary,
        f"config ok: {path}\nsite {cfg.site.id} · control {live} · parts: {', '.join(parts) or 'none'}"
        f" · SOC window {c.soc_min_pct:g}-{c.soc_max_pct:g} % · required sources: {', '.join(sources)}",
    )
    return EXIT_OK


def _modbus(args: argparse.Namespace, io: _Io) -> int:
    from interfaces.cli.fieldbus import ModbusReader, Serial, parse_host, parse_range, read_registers, scan_device

    host, port = parse_host(args.host)
    serial = Serial(args.baud, args.parity, args.stopbits) if host.startswith("/") else None
    if not 0 <= args.unit <= 247:
        raise CliError(f"--unit: 0..247 (got {args.unit})", EXIT_USAGE)
    if not 0 < args.rate <= 20:
        raise CliError(f"--rate: 0 < rate <= 20 requests/s (got {args.rate:g})", EXIT_USAGE)
    timeout_s = getattr(args, "timeout", 2.0)
    if args.modbus_cmd == "scan":
        search = parse_range(args.search) if args.search else None
        with ModbusReader(host, port, args.unit, rate_hz=args.rate, timeout_s=timeout_s, serial=serial) as reader:
            result = scan_device(reader, search)
        io.emit(result.as_json(), result.text)
        return EXIT_OK if result.found else EXIT_FAIL
    with ModbusReader(host, port, args.unit, rate_hz=args.rate, timeout_s=timeout_s, serial=serial) as reader:
        r = read_registers(reader, args.address, args.count, type_=args.type, input_regs=args.input)
    regs = " ".join(f"{w:04x}" for w in r["registers"])
    vals = ", ".join("n/a" if v is None else (v if isinstance(v, str) else f"{v:g}") for v in r["values"])
    io.emit(r, f"{r['where']} {'input' if args.input else 'holding'} {r['address']}+{len(r['registers'])}: {regs}  ->  {args.type} {vals}")
    return EXIT_OK


def _can(args: argparse.Namespace, io: _Io, stop: threading.Event) -> int:
    from interfaces.can.codec import Codec
    from interfaces.cli.fieldbus import can_decode, can_decode_text, can_frames, parse_can_data, parse_can_id

    if args.can_cmd == "decode":
        d = can_decode(Codec(), parse_can_id(args.id), parse_can_data(" ".join(args.data)))
        io.emit(d, lambda: can_decode_text(d))
        return EXIT_FAIL if "error" in d else EXIT_OK
    import can as pycan

    from config.can import CanConfig, CurrentPositive
    from interfaces.can.bus import open_bus

    base = _can_section(args.config) if args.config else CanConfig()
    overrides = {k: getattr(args, k) for k in ("interface", "channel", "host", "port") if getattr(args, k) is not None}
    cfg = CanConfig.model_validate({**base.model_dump(), **overrides})
    codec = Codec(current_sign=1.0 if cfg.current_positive is CurrentPositive.CHARGE else -1.0)
    try:
        bus = open_bus(cfg)
    except (pycan.CanError, OSError, ValueError) as exc:
        raise CliError(f"CAN {cfg.interface.value}:{cfg.channel}: cannot open: {exc}", EXIT_UNREACHABLE) from exc
    try:
        for msg in can_frames(bus, count=args.count, idle_timeout_s=args.idle_timeout, stop=stop.is_set):
            d = can_decode(codec, msg.arbitration_id, bytes(msg.data), extended=msg.is_extended_id)
            io.emit(d, can_decode_text(d))
    except (pycan.CanError, OSError) as exc:
        raise CliError(f"CAN {cfg.interface.value}:{cfg.channel}: {exc}", EXIT_UNREACHABLE) from exc
    finally:
        bus.shutdown()
    return EXIT_OK


def _can_section(path: str) -> Any:
    from config import ConfigError, load_config

    try:
        return load_config(path).can
    except ConfigError as exc:
        raise CliError(f"{path}: invalid config ({exc.problems[0]}); run `emsctl config check {path}`", EXIT_USAGE) from exc


if __name__ == "__main__":
    sys.exit(main())
