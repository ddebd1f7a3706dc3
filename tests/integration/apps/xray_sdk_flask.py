"""A Flask service written the way an AWS X-Ray SDK user writes one (run under ``pulsetrace run``).

Nothing here knows about pulsetrace: XRayMiddleware, patch_all(), capture, in_subsegment,
put_annotation, put_metadata and a background worker with begin_segment, as the SDK's docs show.
The SDK is configured to send to ``SDK_DAEMON_ADDRESS``: the test asserts that nothing arrives there.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from aws_xray_sdk.core import patch_all, xray_recorder
from aws_xray_sdk.ext.flask.middleware import XRayMiddleware
from flask import Flask, jsonify

xray_recorder.configure(service="orders-api", daemon_address=os.environ["SDK_DAEMON_ADDRESS"],
                        context_missing="LOG_ERROR")
patch_all()

app = Flask(__name__)
XRayMiddleware(app, xray_recorder)

_db = sqlite3.connect(":memory:", check_same_thread=False)
_db.execute("create table orders (id integer primary key, total real)")
_db.execute("insert into orders values (7, 499.0)")
_lock = threading.Lock()


@xray_recorder.capture("load_order")
def load_order(order_id: int) -> Any:
    with _lock:
        cursor = _db.cursor()
        cursor.execute("select total from orders where id = ?", (order_id,))
        return cursor.fetchone()


@app.route("/orders/<int:order_id>")
def get_order(order_id: int) -> Any:
    xray_recorder.put_annotation("order_id", str(order_id))
    row = load_order(order_id)
    with xray_recorder.in_subsegment("price") as sub:
        sub.put_annotation("currency", "INR")
        xray_recorder.put_metadata("cart", {"items": 2, "coupon": None}, "shop")
    segment = xray_recorder.current_segment()
    return jsonify(total=row[0] if row else None, trace_id=segment.trace_id, segment_id=segment.id,
                   sampled=segment.sampled)


@app.route("/fail")
def fail() -> Any:
    @xray_recorder.capture("charge")
    def charge() -> None:
        raise RuntimeError("gateway timeout")

    charge()
    return "unreachable"


def _nightly_report(done: threading.Event) -> None:
    xray_recorder.begin_segment("nightly-report")
    try:
        xray_recorder.put_annotation("job", "report")
        load_order(7)
    finally:
        xray_recorder.end_segment()
        done.set()


@app.route("/jobs", methods=["POST"])
def start_job() -> Any:
    done = threading.Event()
    threading.Thread(target=_nightly_report, args=(done,), name="report-worker").start()
    done.wait(10)
    return jsonify(started=True), 202
