"""Reading the local store: the queries the CLI, the views and the console run (no writes).

A mixin of :class:`~pulsetrace.store.db.LocalStore`, which provides :meth:`connect`. Every
query is indexed; a store whose tables do not exist yet reads as empty.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pulsetrace.store.rows import StoredSpan, row_to_span

#: The ``spans`` columns in the order :func:`~pulsetrace.store.rows.row_to_span` reads them.
COLUMNS = ("trace_id, span_id, parent_span_id, name, kind, service, start, end, status, status_message, "
         "attributes, events, resource, links, scope, remote_parent")


class SpanQueries:
    """The read side of the store. Subclasses provide :meth:`connect` (one connection per thread)."""

    if TYPE_CHECKING:  # provided by the store class this is mixed into
        def connect(self) -> sqlite3.Connection: ...

    def _read(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor | None:
        """Run a query; ``None`` when the store's tables do not exist yet (a writer is creating them)."""
        try:
            return self.connect().execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        cur = self._read(sql, args)
        return cur.fetchall() if cur is not None else []

    def trace_spans(self, trace_id: str) -> list[StoredSpan]:
        rows = self._rows(f"SELECT {COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start", (trace_id.lower(),))
        return [row_to_span(r) for r in rows]

    def traces_spans(self, trace_ids: Sequence[str]) -> dict[str, list[StoredSpan]]:
        """The spans of several traces at once, each list in start order."""
        out: dict[str, list[StoredSpan]] = {t: [] for t in trace_ids}
        ids = list(trace_ids)
        for i in range(0, len(ids), 500):  # SQLite caps the number of bound parameters
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._rows(f"SELECT {COLUMNS} FROM spans WHERE trace_id IN ({marks}) ORDER BY start", chunk):
                out[row[0]].append(row_to_span(row))
        return out

    def find_trace_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Trace ids starting with ``prefix`` (lower-case hex), through the primary-key index."""
        prefix = prefix.lower()
        upper = prefix + "g"  # 'g' sorts after every hex digit
        rows = self._rows("SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? LIMIT ?",
                          (prefix, upper, limit))
        return [r[0] for r in rows]

    def recent_trace_ids(self, limit: int = 20, since: float | None = None) -> list[str]:
        """The ``limit`` traces with the most recent spans, newest first.

        Walks the ``start`` index backwards and stops at ``limit`` distinct traces, so
        the cost follows the number of traces asked for, not the size of the store.
        """
        if limit <= 0:
            return []
        sql = "SELECT trace_id FROM spans"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE start >= ?"
            args.append(since)
        sql += " ORDER BY start DESC"
        seen: dict[str, None] = {}
        cur = self._read(sql, args)
        if cur is None:
            return []
        while len(seen) < limit:
            rows = cur.fetchmany(512)
            if not rows:
                break
            for (trace_id,) in rows:
                seen.setdefault(trace_id, None)
                if len(seen) >= limit:
                    break
        cur.close()
        return list(seen)

    def trace_ids_before(self, limit: int, before: float | None = None, since: float | None = None
                         ) -> list[tuple[str, float]]:
        """Up to ``limit`` traces, newest first, as ``(trace_id, start of its newest span)``.

        Only spans with ``since <= start < before`` are looked at, through the ``start`` index
        walked backwards, so a page costs the traces it returns, not the size of the store.
        A caller pages on by passing the last start it got back as the next ``before``.
        """
        if limit <= 0:
            return []
        clauses, args = [], []
        if before is not None:
            clauses.append("start < ?")
            args.append(before)
        if since is not None:
            clauses.append("start >= ?")
            args.append(since)
        sql = "SELECT trace_id, start FROM spans" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        cur = self._read(sql + " ORDER BY start DESC", args)
        if cur is None:
            return []
        seen: dict[str, float] = {}
        try:
            while len(seen) < limit:
                rows = cur.fetchmany(512)
                if not rows:
                    break
                for trace_id, start in rows:
                    if trace_id not in seen:
                        seen[trace_id] = float(start)
                        if len(seen) >= limit:
                            break
        finally:
            cur.close()
        return list(seen.items())

    def spans_since(self, since: float, limit: int = 200_000) -> list[StoredSpan]:
        rows = self._rows(f"SELECT {COLUMNS} FROM spans WHERE start >= ? ORDER BY start LIMIT ?", (since, limit))
        return [row_to_span(r) for r in rows]

    def span_count(self) -> int:
        rows = self._rows("SELECT count(*) FROM spans")
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[tuple[str, str], float]:
        """Agent counters summed over every process that wrote them."""
        rows = self._rows("SELECT name, reason, sum(value) FROM process_counters GROUP BY name, reason")
        return {(r[0], r[1]): float(r[2]) for r in rows}

    def processes(self) -> int:
        """How many agent processes have reported counters (within the retention period)."""
        rows = self._rows("SELECT count(DISTINCT instance) FROM process_counters")
        return int(rows[0][0]) if rows else 0
