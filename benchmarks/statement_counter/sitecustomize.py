"""Counts the SQL statements and transactions a ledger process sends, for benchmarks/recharges.py.

Imported by Python at start-up when this folder is on PYTHONPATH; counts only when
LEDGER_BENCH_STATEMENT_COUNTS names a folder, where a thread writes this process's counts
(`<pid>.json`) every 0.1 s and at exit. Every statement psycopg sends is counted: each
`execute`, each parameter set of an `executemany`, each BEGIN/COMMIT/ROLLBACK and each
connection check a pool makes. A transaction is a COMMIT or ROLLBACK, or a statement sent on
an autocommit connection outside a transaction block. Statements are counted apart for
request threads (FastAPI's thread pool: "AnyIO worker thread") and the rest (runners, sagas,
dispatcher, worker), with the commonest statements of each by their first words.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

FOLDER = os.environ.get("LEDGER_BENCH_STATEMENT_COUNTS")


def install(folder: Path) -> None:
    import psycopg
    from psycopg import pq

    counts: dict[str, Counter[str]] = {"request": Counter(), "background": Counter()}
    texts: dict[str, Counter[str]] = {"request": Counter(), "background": Counter()}
    mutex = threading.Lock()
    spaces = re.compile(r"\s+")

    def where() -> str:
        name = threading.current_thread().name
        return "request" if name.startswith("AnyIO worker thread") else "background"

    def text_of(query: Any, conn: Any) -> str:
        try:
            raw = query.as_string(conn) if hasattr(query, "as_string") else query
            if isinstance(raw, bytes):
                raw = raw.decode(errors="replace")
        except Exception:  # noqa: BLE001 - a label only
            raw = str(query)
        return spaces.sub(" ", str(raw)).strip()[:90] or "(empty: a connection check)"

    def count(conn: Any, query: Any, statements: int = 1) -> None:
        text = text_of(query, conn)
        head = text.split(" ", 1)[0].upper()
        in_block = conn.pgconn.transaction_status != pq.TransactionStatus.IDLE
        ends = head in ("COMMIT", "ROLLBACK") or (
            not in_block and conn.autocommit and head != "BEGIN" and conn._pipeline is None
        )
        side = where()
        with mutex:
            counts[side]["statements"] += statements
            counts[side]["transactions"] += statements if ends else 0
            texts[side][text] += statements

    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    command = psycopg.Connection._exec_command

    def counted_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        count(self.connection, query)
        return execute(self, query, *args, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, *a: Any, **k: Any) -> Any:
        params_seq = list(params_seq)
        count(self.connection, query, len(params_seq))
        return executemany(self, query, params_seq, *a, **k)

    def counted_command(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        count(self, query)
        return command(self, query, *args, **kwargs)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
    psycopg.Connection._exec_command = counted_command  # type: ignore[method-assign]

    path = folder / f"{os.getpid()}.json"

    def write() -> None:
        with mutex:
            snapshot = {
                side: {**counts[side], "top": texts[side].most_common(80)} for side in counts
            }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(snapshot))
        temporary.replace(path)

    def keep_writing() -> None:
        while True:
            threading.Event().wait(0.1)
            try:
                write()
            except OSError:
                return

    threading.Thread(target=keep_writing, name="statement-counts", daemon=True).start()
    atexit.register(write)


if FOLDER:
    install(Path(FOLDER))
