"""The closest fair ASGI equivalent of the aws-xray-sdk's own web middlewares (benchmark peer only).

aws-xray-sdk ships middlewares for aiohttp, Django, Flask and Bottle, none for ASGI.
This one does per request what its aiohttp middleware does, through the SDK's
public helpers: read ``X-Amzn-Trace-Id``, take the sampling decision, begin a
segment on the async recorder (``AsyncContext``: task-local storage), record the
HTTP request/response metadata, add an exception with its stack trace on failure,
answer with the trace header, and end the segment, which serializes it and sends
it to the daemon address over UDP on the request's own task (the SDK's design).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aws_xray_sdk.core.models import http
from aws_xray_sdk.core.models.trace_header import TraceHeader
from aws_xray_sdk.core.utils import stacktrace
from aws_xray_sdk.ext.util import calculate_sampling_decision, prepare_response_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class XRayASGIMiddleware:
    def __init__(self, app: ASGIApp, recorder: Any) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        recorder = self.recorder
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        raw = headers.get("x-amzn-trace-id")
        xray_header = TraceHeader.from_header_str(raw) if raw else TraceHeader()
        host = headers.get("host", "")
        sampling_req = {"host": host, "method": scope["method"], "path": scope["path"], "service": recorder.service}
        decision = calculate_sampling_decision(trace_header=xray_header, recorder=recorder, sampling_req=sampling_req)
        segment = recorder.begin_segment(name=recorder.service, traceid=xray_header.root,
                                         parent_id=xray_header.parent, sampling=decision)
        segment.save_origin_trace_header(xray_header)
        query = scope.get("query_string") or b""
        url = f"{scope.get('scheme', 'http')}://{host}{scope['path']}" + (f"?{query.decode('latin-1')}" if query else "")
        segment.put_http_meta(http.URL, url)
        segment.put_http_meta(http.METHOD, scope["method"])
        if "user-agent" in headers:
            segment.put_http_meta(http.USER_AGENT, headers["user-agent"])
        if "x-forwarded-for" in headers:
            segment.put_http_meta(http.CLIENT_IP, headers["x-forwarded-for"])
            segment.put_http_meta(http.X_FORWARDED_FOR, True)
        elif scope.get("client"):
            segment.put_http_meta(http.CLIENT_IP, scope["client"][0])
        trace_header_value = prepare_response_header(xray_header, segment).encode("latin-1")

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                segment.put_http_meta(http.STATUS, message.get("status", 200))
                message["headers"] = [*message.get("headers", ()), (b"x-amzn-trace-id", trace_header_value)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as err:
            segment.put_http_meta(http.STATUS, 500)
            segment.add_exception(err, stacktrace.get_stacktrace(limit=recorder.max_trace_back))
            raise
        finally:
            recorder.end_segment()
