"""The health HTTP server (h11 inside our own asyncio protocol): see :mod:`pulsetrace.http.server`.

The names below are its interface to the rest of pulsetrace.
"""

from pulsetrace.http.messages import (
           Handler,
           Request,
           Response,
           ServerLimits,
           error,
           is_loopback,
           json_response,
)
from pulsetrace.http.server import HealthServer, split_listen

__all__ = ["Handler", "HealthServer", "Request", "Response", "ServerLimits", "error", "is_loopback", "json_response",
           "split_listen"]
