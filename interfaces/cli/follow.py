"""`emsctl events --follow`: new events as the EMS records them, over the live stream (GET /api/v1/stream,
Server-Sent Events), so they show at once rather than after the store's next flush. When the stream
is not there (an older EMS: 404) or full (503), it polls /api/v1/events as before and tries the
stream again later. The stream ends now and then (api.stream_max_s): it reconnects with Last-Event-ID.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests

from interfaces.cli.client import EXIT_REFUSED, EXIT_SERVER, ApiClient, CliError

__all__ = ["follow_events", "sse_messages"]

_RETRY_STREAM_S = 30.0  # after a refused stream, poll this long before trying it again
_READ_TIMEOUT_S = 90.0  # heartbeats come every api.stream_heartbeat_s (15 s): silence this long is a dead link


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) per message of a text/event-stream (comments and retry lines skipped)."""
    event, data, id_ = "message", list[str](), None
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data), id_
            event, data, id_ = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            id_ = value


def follow_events(
    api: ApiClient,
    *,
    kinds: Sequence[str] | None,
    after_event_seq: int | None,
    after_row: int,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    interval_s: float,
) -> None:
    """Emit events newer than what was shown until `stop` (or Ctrl-C)."""
    wanted = set(kinds) if kinds else None
    last = after_event_seq
    catch_up: Callable[[], set[int]] | None = None
    if last is None:  # nothing shown to resume from: once the stream is open, fetch what came since the history

        def catch_up() -> set[int]:
            nonlocal after_row
            after_row, shown = _poll_once(api, kinds, after_row, emit)
            return shown

    while not stop.is_set():
        try:
            last = _stream(api, last, wanted, emit, stop, catch_up)
            catch_up = None
            continue  # the server ended the stream: reconnect where it left off
        except CliError as exc:
            if exc.code not in (EXIT_REFUSED, EXIT_SERVER):  # 404 (no stream) or 503 (full): poll; else fail
                raise
        after_row, polled = _poll(api, kinds, after_row, emit, stop, interval_s, _RETRY_STREAM_S)
        last = polled if polled is not None else last


def _stream(
    api: ApiClient,
    last: int | None,
    wanted: set[str] | None,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    catch_up: Callable[[], set[int]] | None = None,
) -> int | None:
    r = api.open_stream("/stream", headers={"Last-Event-ID": str(last)} if last is not None else {}, read_timeout_s=_READ_TIMEOUT_S)
    shown = catch_up() if catch_up is not None else set()
    closer = threading.Thread(target=lambda: (stop.wait(), r.close()), name="emsctl-follow-close", daemon=True)
    closer.start()
    try:
        for event, data, id_ in sse_messages(r.iter_lines(decode_unicode=True)):
            if event != "event":
                continue
            e = json.loads(data)
            last = int(id_) if id_ and id_.isdigit() else last
            if (wanted is None or e.get("kind") in wanted) and e.get("event_seq") not in shown:
                emit(e)
    except (requests.RequestException, AttributeError, ValueError):  # closed by `stop`, or the link dropped: reconnect
        pass
    finally:
        r.close()
    return last


def _poll_once(api: ApiClient, kinds: Sequence[str] | None, after: int, emit: Callable[[dict[str, Any]], None]) -> tuple[int, set[int]]:
    params: dict[str, Any] = {"kind": list(kinds)} if kinds else {}
    page = api.request("GET", "/events", params={**params, "after_seq": after, "limit": 1000}).body
    shown: set[int] = set()
    for e in page.get("events") or []:
        emit(e)
        after = e["seq"]
        if e.get("event_seq") is not None:
            shown.add(int(e["event_seq"]))
    return after, shown


def _poll(
    api: ApiClient,
    kinds: Sequence[str] | None,
    after: int,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    interval_s: float,
    for_s: float,
) -> tuple[int, int | None]:
    """Poll /events after row `after` for `for_s`; returns (last row, last event seq shown)."""
    params: dict[str, Any] = {"kind": list(kinds)} if kinds else {}
    last: int | None = None
    waited = 0.0
    while waited < for_s and not stop.wait(interval_s):
        waited += interval_s
        page = api.request("GET", "/events", params={**params, "after_seq": after, "limit": 1000}).body
        for e in page.get("events") or []:
            emit(e)
            after = e["seq"]
            last = e.get("event_seq", last)
    return after, last
