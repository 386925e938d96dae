"""Crash safety: the writer process is killed with SIGKILL in the middle of its work; after a
restart the database is intact and every committed outbox row reaches the receiver exactly once,
in order."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

from ems.clock import SimClock
from ems.context import EMSContext
from tests.helpers.common import PYTHON, REPO_ROOT, wait_for
from tests.helpers.uplink import make_receiver, make_sender, make_store, make_tls, store_cfg, uplink_cfg


def test_sigkill_mid_batches_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    db = tmp_path / "ems.db"
    rx = make_receiver(tls, max_skew_s=1e10)  # the writer runs in simulated time, far from ours
    committed: list[tuple[int, str]] = []
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.helpers.store_proc", "--db", str(db), "--url", rx.url, "--ca", str(tls.ca_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "committed":
                committed.append((int(parts[1]), parts[2]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: (len(committed) >= 40 and len(rx.batch_ids()) >= 10) or proc.poll() is not None,
            timeout_s=60,
            what="batches committed and sent",
        )
        assert proc.poll() is None, "the writer process died on its own"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        reader.join(5)
        assert proc.returncode == -signal.SIGKILL

        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT id, batch_id FROM outbox").fetchall())
        last_ms = conn.execute("SELECT max(ts_ms) FROM samples").fetchone()[0]
        conn.close()
        assert all(rows.get(i) == b for i, b in committed)  # every committed row survived as it was

        # restart: the store reopens the file, the sender delivers what is left
        clock = SimClock(start_wall=datetime.fromtimestamp(last_ms / 1000 + 1, UTC))
        ctx = EMSContext(clock=clock)
        store = make_store(store_cfg(db), ctx, site_id="crash", outbox_enabled=True)
        sender = make_sender(uplink_cfg(rx.url, tls.ca_file), store, ctx)
        store.flush()
        while sender.pump() in ("delivered", "parked"):
            pass
        store.flush()
        ids = [r[0] for r in store._conn.execute("SELECT batch_id FROM outbox ORDER BY id")]
        pending = store._conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        rx.stop()
    received = rx.batch_ids()
    assert pending == 0
    assert received == ids  # each committed row once, in order; nothing the receiver has is unknown here
    assert len(received) == len(set(received)) >= 40
