"""`store.sessions.write_lock`: SQLite writers take turns across threads and processes; elsewhere a no-op."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from carrygate.store.sessions import SqliteWriteLock, make_engine, write_lock


def test_one_lock_per_database_file(tmp_path: Path) -> None:
    first, second = make_engine(f"sqlite:///{tmp_path / 'a.db'}"), make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    other = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert isinstance(write_lock(first), SqliteWriteLock) and write_lock(first) is write_lock(second)
        assert write_lock(other) is not write_lock(first)
        assert not isinstance(write_lock(create_engine("sqlite://")), SqliteWriteLock)  # in memory: no file
        assert not isinstance(write_lock(create_engine("postgresql+psycopg://u@127.0.0.1:1/x")), SqliteWriteLock)
    finally:
        for engine in (first, second, other):
            engine.dispose()


def test_threads_take_turns(tmp_path: Path) -> None:
    lock = write_lock(make_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    inside, overlaps = [0], []

    def work() -> None:
        for _ in range(50):
            with lock:
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 200 and max(overlaps) == 1


def test_another_process_waits_for_the_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    holder = textwrap.dedent(f"""
        import sys, time
        from carrygate.store.sessions import make_engine, write_lock
        with write_lock(make_engine({url!r})):
            print("held", flush=True)
            time.sleep(1.0)
    """)
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        start = time.monotonic()
        with write_lock(make_engine(url)):
            waited = time.monotonic() - start
    finally:
        process.wait(30)
    assert waited > 0.5, f"took the lock after {waited:.3f} s while another process held it"
