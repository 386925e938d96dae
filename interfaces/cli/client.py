"""A small REST client for the EMS API (docs/api.md): base URL, bearer token, errors with exit codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

__all__ = [
    "DEFAULT_URL",
    "EXIT_AUTH",
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_SERVER",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ApiClient",
    "CliError",
    "Reply",
    "default_url",
    "token_from",
]

EXIT_OK = 0  # done / healthy / valid
EXIT_FAIL = 1  # the thing checked is not ok: unhealthy, invalid config, undecodable frame, no SunSpec device
EXIT_USAGE = 2  # bad command line (argparse) or a missing token
EXIT_UNREACHABLE = 3  # cannot reach the EMS API or the device (connection refused, timeout)
EXIT_AUTH = 4  # 401/403: missing, wrong or too weak token
EXIT_REFUSED = 5  # the API refused the request (400/404/413/415/422): the message names the field
EXIT_SERVER = 6  # the API failed (5xx) or answered something that is not its JSON

DEFAULT_URL = "http://127.0.0.1:8080"
PREFIX = "/api/v1"


class CliError(Exception):
    """An error to print (one line) and exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def token_from(environ: Mapping[str, str], token_file: str | None) -> str | None:
    """The bearer token: --token-file, else $EMSCTL_TOKEN, else the file named by $EMSCTL_TOKEN_FILE.

    There is deliberately no --token VALUE option: a token on the command line shows in `ps` and shell history."""
    path = token_file or None
    if path is None and environ.get("EMSCTL_TOKEN"):
        return environ["EMSCTL_TOKEN"].strip()
    path = path or environ.get("EMSCTL_TOKEN_FILE") or None
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if not text:
        raise CliError(f"token file {path} is empty", EXIT_USAGE)
    return text


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        write: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> Reply:
        if write and not self.token:
            raise CliError("this command needs an operator token: set EMSCTL_TOKEN, EMSCTL_TOKEN_FILE or --token-file", EXIT_USAGE)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        where = f"{self.url}{PREFIX}{path}"
        try:
            r = self._session.request(method, where, params=params, json=body, headers=headers, timeout=self.timeout_s)
        except requests.Timeout as exc:
            raise CliError(f"EMS API at {self.url}: no answer within {self.timeout_s:g} s", EXIT_UNREACHABLE) from exc
        except requests.ConnectionError as exc:
            raise CliError(f"EMS API at {self.url}: cannot connect (is the EMS running with api.enabled: true?)", EXIT_UNREACHABLE) from exc
        except requests.RequestException as exc:
            raise CliError(f"EMS API at {self.url}: {exc}", EXIT_UNREACHABLE) from exc
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CliError(f"EMS API {method} {path}: HTTP {r.status_code} without a JSON object (is {self.url} the EMS API?)", EXIT_SERVER)
        if r.status_code in ok:
            return Reply(r.status_code, data)
        message = str(data.get("message") or data.get("error") or f"HTTP {r.status_code}")
        if r.status_code in (401, 403):
            raise CliError(f"refused ({r.status_code}): {message}", EXIT_AUTH)
        if 400 <= r.status_code < 500:
            raise CliError(f"refused ({r.status_code}): {message}", EXIT_REFUSED)
        raise CliError(f"EMS API error ({r.status_code}): {message}", EXIT_SERVER)

    def download(self, path: str, *, params: Mapping[str, Any], out: IO[bytes]) -> int:
        """GET a streamed file into `out` chunk by chunk (never the whole body in memory); returns the bytes written."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        where = f"{self.url}{PREFIX}{path}"
        try:
            with self._session.get(where, params=params, headers=headers, timeout=self.timeout_s, stream=True) as r:
                if r.status_code != 200:
                    self._fail("GET", path, r)
                n = 0
                for chunk in r.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    n += len(chunk)
                return n
        except requests.Timeout as exc:
            raise CliError(f"EMS API at {self.url}: no answer within {self.timeout_s:g} s", EXIT_UNREACHABLE) from exc
        except requests.ConnectionError as exc:
            raise CliError(f"EMS API at {self.url}: cannot connect (is the EMS running with api.enabled: true?)", EXIT_UNREACHABLE) from exc

    def open_stream(self, path: str, *, headers: Mapping[str, str], read_timeout_s: float) -> requests.Response:
        """GET a Server-Sent Events stream (the caller reads and closes it); non-200 raises CliError."""
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = self._session.get(
                f"{self.url}{PREFIX}{path}", headers={**auth, **headers, "Accept": "text/event-stream"}, stream=True,
                timeout=(self.timeout_s, read_timeout_s),
            )  # fmt: skip
        except requests.RequestException as exc:
            raise CliError(f"EMS API at {self.url}: stream: {exc}", EXIT_UNREACHABLE) from exc
        if r.status_code != 200:
            with r:
                self._fail("GET", path, r)
        return r

    def _fail(self, method: str, path: str, r: requests.Response) -> None:
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CliError(f"EMS API {method} {path}: HTTP {r.status_code} without a JSON object (is {self.url} the EMS API?)", EXIT_SERVER)
        message = str(data.get("message") or data.get("error") or f"HTTP {r.status_code}")
        if r.status_code in (401, 403):
            raise CliError(f"refused ({r.status_code}): {message}", EXIT_AUTH)
        if 400 <= r.status_code < 500:
            raise CliError(f"refused ({r.status_code}): {message}", EXIT_REFUSED)
        raise CliError(f"EMS API error ({r.status_code}): {message}", EXIT_SERVER)


def default_url(environ: Mapping[str, str]) -> str:
    return environ.get("EMSCTL_URL") or DEFAULT_URL
