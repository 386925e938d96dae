"""Uplink batch identity (issue 18): ids carry the installation (kept in the database) and a content digest.

A batch id made of site and window only is re-created by a replaced or restored database, and the
receiver then drops the second, different batch as a duplicate. With the installation id and the
content digest in the id, a replaced database's batches and a restored database's different
batches are stored; the same id with different content is a conflict (409), which the sender logs
and keeps (parked, never marked delivered).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from interfaces.store import events
from interfaces.uplink import sign
from tests.helpers.uplink import HMAC_KEY, TOKEN, SimSite, Tls, make_receiver, make_tls, uplink_cfg


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


def _site(db: Path, tls: Tls, url: str, **kw: float) -> SimSite:
    return SimSite(db, site_id="site-r", uplink=uplink_cfg(url, tls.ca_file), **kw)  # type: ignore[arg-type]


def _backup(src: Path, dst: Path) -> None:
    """An online copy (the SQLite backup API: the WAL's commits too), as an operator's backup would be."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def _installation(db: Path) -> object:
    return sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'installation_id'").fetchone()[0]


def test_a_replaced_or_restored_database_delivers_its_batches_instead_of_losing_them_as_duplicates(tmp_path: Path, tls: Tls) -> None:
    rx = make_receiver(tls, max_skew_s=1e10)
    try:
        first = _site(tmp_path / "a.db", tls, rx.url)
        first.run(600)
        _backup(tmp_path / "a.db", tmp_path / "backup.db")  # a backup after two windows
        first.run(1200)
        first.drain()
        first.store.close()
        sent_first = set(rx.batch_ids())
        assert len(sent_first) >= 5 and rx.counts["duplicate"] == 0

        # the SD card dies: a fresh database, same site, same windows (the clock starts at the same wall time)
        fresh = _site(tmp_path / "b.db", tls, rx.url, grid_offset_w=100.0)
        fresh.run(1800)
        fresh.drain()
        assert _installation(tmp_path / "a.db") != _installation(tmp_path / "b.db")
        assert rx.counts["duplicate"] == 0 and rx.counts["stored"] == len(sent_first) + len(fresh.outbox_ids())
        assert not set(fresh.outbox_ids()) & sent_first  # every one of its batches is new to the receiver
        fresh.store.close()

        # the backup is restored: same installation, the windows after the backup again, with other data
        _backup(tmp_path / "backup.db", tmp_path / "restored.db")
        restored = _site(tmp_path / "restored.db", tls, rx.url, grid_offset_w=-50.0)
        assert _installation(tmp_path / "restored.db") == _installation(tmp_path / "a.db")
        restored.clock.advance(600.0)  # it resumes where the backup ended
        restored.run(1200)
        restored.drain()
        again = [b for b in restored.outbox_ids() if b not in sent_first]
        assert again and set(again) <= set(rx.batch_ids()) and rx.counts["conflict"] == 0
        assert set(restored.outbox_ids("delivered")) == set(restored.outbox_ids())
        restored.store.close()
    finally:
        rx.stop()
    stored = rx.batches()
    assert all(b["installation_id"] and b["content_sha256"] for b in stored)
    assert len({b["batch_id"] for b in stored}) == len(stored)


def test_the_same_id_with_other_content_is_a_conflict_the_sender_logs_and_keeps(tmp_path: Path, tls: Tls) -> None:
    rx = make_receiver(tls, max_skew_s=1e10)

    def post(payload: dict[str, object]) -> requests.Response:
        data = gzip.compress(json.dumps(payload).encode())
        t = str(int(time.time()))
        headers = {"Authorization": f"Bearer {TOKEN}", "X-EMS-Timestamp": t, "X-EMS-Signature": sign(HMAC_KEY, t, data)}
        return requests.post(rx.url, data=data, headers={**headers, "Content-Encoding": "gzip"}, verify=str(tls.ca_file), timeout=5)

    try:
        assert post({"batch_id": "s:x:1", "samples": 300}).json()["status"] == "stored"
        assert post({"batch_id": "s:x:1", "samples": 300}).json()["status"] == "duplicate"
        clash = post({"batch_id": "s:x:1", "samples": 299})
        assert clash.status_code == 409 and clash.json()["status"] == "conflict"

        site = _site(tmp_path / "c.db", tls, rx.url)
        site.run(900, pump=False)
        victim = site.outbox_ids()[0]
        assert post({"batch_id": victim, "samples": -1}).json()["status"] == "stored"  # someone else's, same id
        site.drain()
        site.store.flush()
    finally:
        rx.stop()
    assert site.outbox_ids("parked") == [victim] and victim not in site.outbox_ids("delivered")
    assert site.ctx.counters.snapshot()["uplink_conflicts"] == 1
    ev = events(site.store.path, kinds=["uplink_parked"])
    assert [e["data"]["batch_id"] for e in ev] == [victim] and ev[0]["data"]["http_status"] == 409  # type: ignore[index]
    site.store.close()
