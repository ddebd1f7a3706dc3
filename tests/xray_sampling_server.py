"""A local X-Ray sampling endpoint: ``GetSamplingRules`` and ``GetSamplingTargets``, checked against botocore.

A stand-in, and why: moto does not implement the two sampling operations, and the X-Ray daemon
(or the ADOT collector) would forward them to the real X-Ray service, which this machine cannot
reach. So this server plays X-Ray's part, on loopback: every request body is parsed and validated
against the input shape of botocore's published X-Ray service model (paths and method from the
model's ``http`` block too), and every answer against the output shape before it is written, so
the wire format on both sides is AWS's, not ours. A request the model rejects gets a 400 and is
recorded in :attr:`SamplingServer.invalid`, which the tests assert is empty.

Reservoir quotas are shared the way X-Ray shares them: a rule's ``ReservoirSize`` is divided
among the clients that reported statistics for it recently (an even split; X-Ray weighs by each
client's request rate, which gives the same split for equal traffic).
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.model import OperationModel, Shape
from botocore.session import get_session
from botocore.validate import validate_parameters

from tests.servers import free_port, wait_port

_MODEL = get_session().get_service_model("xray")
OPERATIONS: dict[str, OperationModel] = {
    _MODEL.operation_model(name).http["requestUri"]: _MODEL.operation_model(name)
    for name in ("GetSamplingRules", "GetSamplingTargets")
}


def _from_wire(value: Any, shape: Shape) -> Any:
    """JSON as sent (timestamps as epoch numbers) → the Python values botocore's validator takes."""
    if shape.type_name == "structure" and isinstance(value, dict):
        return {k: _from_wire(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [_from_wire(v, shape.member) for v in value]  # type: ignore[attr-defined]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: _from_wire(v, shape.value) for k, v in value.items()}  # type: ignore[attr-defined]
    if shape.type_name == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return value


def _to_wire(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


def rule(name: str, priority: int, fixed_rate: float, reservoir: int, **fields: Any) -> dict[str, Any]:
    """A ``SamplingRule`` as the X-Ray console stores it (every required member present)."""
    doc: dict[str, Any] = {
        "RuleName": name, "RuleARN": f"arn:aws:xray:us-east-1:123456789012:sampling-rule/{name}",
        "ResourceARN": "*", "Priority": priority, "FixedRate": fixed_rate, "ReservoirSize": reservoir,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*", "Version": 1,
    }
    doc.update(fields)
    return doc


DEFAULT_RULE = rule("Default", 10000, 0.05, 1)


@dataclass
class SamplingServer:
    """The endpoint. Set :attr:`rules` (``SamplingRule`` dicts) at any time; ``stop``/``start`` for outages."""

    port: int = field(default_factory=free_port)
    rules: list[dict[str, Any]] = field(default_factory=lambda: [DEFAULT_RULE])
    quota_ttl_s: float = 10.0
    #: Every statistics document received, in order.
    statistics: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    last_rule_modification: float = field(default_factory=time.time)
    _clients: dict[str, dict[str, float]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SamplingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = owner.handle(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="xray-sampling-server", daemon=True).start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        with self._lock:
            self.rules = rules
            self.last_rule_modification = time.time()

    def clients(self, rule_name: str, within_s: float = 30.0) -> list[str]:
        now = time.time()
        with self._lock:
            return sorted(c for c, seen in self._clients.get(rule_name, {}).items() if now - seen <= within_s)

    def handle(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        op = OPERATIONS.get(path)
        if op is None or op.http["method"] != "POST":
            self.invalid.append(f"unknown path {path}")
            return 404, {"message": "unknown operation"}
        try:
            params = _from_wire(json.loads(body or b"{}"), op.input_shape)
            validate_parameters(params, op.input_shape)
        except Exception as exc:
            self.invalid.append(f"{op.name}: {exc}")
            return 400, {"__type": "InvalidRequestException", "message": str(exc)}
        with self._lock:
            self.calls[op.name] = self.calls.get(op.name, 0) + 1
        answer = self._rules_answer() if op.name == "GetSamplingRules" else self._targets_answer(params)
        validate_parameters(answer, op.output_shape)  # our answer must be one X-Ray could give
        return 200, _to_wire(answer)

    def _rules_answer(self) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.timezone.utc)
        with self._lock:
            records = [{"SamplingRule": dict(r), "CreatedAt": now, "ModifiedAt": now} for r in self.rules]
        return {"SamplingRuleRecords": records}

    def _targets_answer(self, params: Mapping[str, Any]) -> dict[str, Any]:
        now = time.time()
        docs = list(params["SamplingStatisticsDocuments"])
        targets: list[dict[str, Any]] = []
        with self._lock:
            self.statistics.extend(docs)
            by_name = {r["RuleName"]: r for r in self.rules}
            for doc in docs:
                self._clients.setdefault(doc["RuleName"], {})[doc["ClientID"]] = now
            for doc in docs:
                found = by_name.get(doc["RuleName"])
                if found is None:
                    continue
                active = [c for c, seen in self._clients[doc["RuleName"]].items() if now - seen <= 30.0]
                targets.append({
                    "RuleName": doc["RuleName"], "FixedRate": found["FixedRate"],
                    "ReservoirQuota": found["ReservoirSize"] // max(1, len(active)),
                    "ReservoirQuotaTTL": datetime.datetime.fromtimestamp(now + self.quota_ttl_s, datetime.timezone.utc),
                    "Interval": 10,
                })
            modified = datetime.datetime.fromtimestamp(self.last_rule_modification, datetime.timezone.utc)
        return {"SamplingTargetDocuments": targets, "LastRuleModification": modified, "UnprocessedStatistics": []}
