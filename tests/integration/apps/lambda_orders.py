"""A Lambda function written the way a pulsetrace user writes one (run through awslambdaric by the tests)."""

from __future__ import annotations

from typing import Any

import pulsetrace
from pulsetrace import business_span


class CardDeclined(Exception):
    """The function's own exception: it must reach Lambda unchanged."""


@pulsetrace.lambda_handler(operation="order.create", tier="business")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event.get("body") or ""
    if "decline" in body:
        raise CardDeclined("card declined for order 42")
    with business_span("order.validate", order_id="42"):
        pass
    return {"statusCode": 201, "body": '{"order": 42}'}


def plain(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Not decorated: traced through AWS_LAMBDA_EXEC_WRAPPER alone."""
    return {"statusCode": 200, "body": "plain"}
