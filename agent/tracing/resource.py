"""The OpenTelemetry resource: service name/version/environment plus AWS detectors.

The ECS, EKS and EC2 detectors run only where their platform leaves a local trace
(ECS metadata variables, a Kubernetes service-account token, a DMI vendor string),
so nothing is sent to the instance-metadata address off AWS; and they run on a
helper thread that is abandoned after ``budget_s`` in total (1 s by default), so a
slow metadata endpoint cannot stall the service's start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.sdk.resources import Resource

from pulsetrace.background import start_worker
from pulsetrace.config.schema import Config

_log = logging.getLogger("pulsetrace.resource")
_DMI = Path("/sys/devices/virtual/dmi/id")
_K8S_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _on_ec2() -> bool:
    for name in ("sys_vendor", "board_asset_tag", "product_version"):
        try:
            text = (_DMI / name).read_text(errors="replace").lower()
        except OSError:
            continue
        if "amazon" in text or text.startswith("i-"):
            return True
    try:
        return Path("/sys/hypervisor/uuid").read_text().lower().startswith("ec2")
    except OSError:
        return False


def _detectors(env: Mapping[str, str]) -> list[object]:
    # The detector modules import urllib/ssl (~20 ms): imported only on a platform that has one.
    found: list[object] = []
    if env.get("ECS_CONTAINER_METADATA_URI_V4") or env.get("ECS_CONTAINER_METADATA_URI"):
        from opentelemetry.sdk.extension.aws.resource.ecs import AwsEcsResourceDetector

        found.append(AwsEcsResourceDetector())
    if env.get("KUBERNETES_SERVICE_HOST") and _K8S_TOKEN.exists():
        from opentelemetry.sdk.extension.aws.resource.eks import AwsEksResourceDetector

        found.append(AwsEksResourceDetector())
    if not found and _on_ec2():
        from opentelemetry.sdk.extension.aws.resource.ec2 import AwsEc2ResourceDetector

        found.append(AwsEc2ResourceDetector())
    return found


def detect_aws(env: Mapping[str, str] | None = None, budget_s: float = 1.0) -> Resource:
    """AWS resource attributes, or an empty resource after at most ``budget_s`` seconds."""
    env = os.environ if env is None else env
    try:
        detectors = _detectors(env)
    except Exception:
        return Resource.get_empty()
    if not detectors:
        return Resource.get_empty()
    result: list[Resource] = []

    def run() -> None:
        merged = Resource.get_empty()
        for det in detectors:
            try:
                merged = merged.merge(det.detect())  # type: ignore[attr-defined]
            except Exception:
                _log.debug("resource detector %s failed", type(det).__name__, exc_info=True)
        result.append(merged)

    t = start_worker("pulsetrace-resource-detect", run)  # the detectors' metadata requests are not traced
    t.join(budget_s)
    return result[0] if result else Resource.get_empty()


def build_resource(cfg: Config, env: Mapping[str, str] | None = None) -> Resource:
    attrs: dict[str, str] = dict(cfg.resource_attributes)
    attrs.update({
        "service.name": cfg.service.name,
        "service.version": cfg.service.version,
        "deployment.environment": cfg.service.environment,
        "deployment.environment.name": cfg.service.environment,
        "telemetry.distro.name": "pulsetrace",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
    })
    # Resource(...) rather than Resource.create(): the latter scans entry points for
    # detectors, which costs start-up time in every worker for nothing we use.
    base = Resource(attrs)
    return detect_aws(env).merge(base)
