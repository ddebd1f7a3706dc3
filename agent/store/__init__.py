"""The embedded local store: spans, agent counters, health history in SQLite under ``store.path``.

:mod:`~pulsetrace.store.db` holds the database (:class:`LocalStore`), :mod:`~pulsetrace.store.rows`
the span record, :mod:`~pulsetrace.store.counters` the agent's counters,
:mod:`~pulsetrace.store.maintenance` the worker that keeps it within its limits,
:mod:`~pulsetrace.store.files` its files on disk (permissions, symlinks, corruption). The names below are
the store's interface to the rest of pulsetrace.
"""

from pulsetrace.store.counters import CounterWriter, counters_instance
from pulsetrace.store.db import DB_NAME, LocalStore, open_store, store_health
from pulsetrace.store.files import StorePathError
from pulsetrace.store.maintenance import StoreMaintainer
from pulsetrace.store.rows import StoredSpan, group_traces, row_to_span, span_row

__all__ = ["DB_NAME", "CounterWriter", "LocalStore", "StoreMaintainer", "StorePathError", "StoredSpan",
           "counters_instance", "group_traces", "open_store", "row_to_span", "span_row", "store_health"]
