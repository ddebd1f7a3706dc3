"""A Django service written the way an AWS X-Ray SDK user writes one (run under ``pulsetrace run``).

The X-Ray SDK's Django app and XRayMiddleware (xray_sdk_django_settings.py), ``capture``,
``in_subsegment``, ``put_annotation`` and ``put_metadata`` in a view; nothing knows pulsetrace.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xray_sdk_django_settings")

from aws_xray_sdk.core import xray_recorder  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

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


def get_order(request: Any, order_id: int) -> JsonResponse:
    xray_recorder.put_annotation("order_id", str(order_id))
    row = load_order(order_id)
    with xray_recorder.in_subsegment("price") as sub:
        sub.put_annotation("currency", "INR")
        xray_recorder.put_metadata("cart", {"items": 2, "coupon": None}, "shop")
    segment = xray_recorder.current_segment()
    return JsonResponse({"total": row[0] if row else None, "trace_id": segment.trace_id,
                         "segment_id": segment.id, "sampled": segment.sampled})


urlpatterns = [path("orders/<int:order_id>", get_order)]
application = get_wsgi_application()
