"""The typed configuration of ``metrics.aws_resources``: the AWS resources around the service.

Part of :mod:`pulsetrace.config.schema` (which re-exports these names). Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pulsetrace.config.fields import _c


@dataclass(frozen=True)
class AlbResource:
    """An Application Load Balancer (``AWS/ApplicationELB``); the ARN suffixes CloudWatch uses."""

    load_balancer: str = ""       # app/NAME/ID
    target_group: str = ""        # targetgroup/NAME/ID
    #: HTTPCode_ELB_5XX + HTTPCode_Target_5XX as a percent of RequestCount (5 minutes).
    error_5xx_percent: float = field(default=5.0, metadata=_c(min=0.0, max=100.0))
    #: UnHealthyHostCount at or above this (per minute, 2 of 3 minutes).
    unhealthy_hosts: int = field(default=1, metadata=_c(min=1))
    #: TargetResponseTime p99 above this many milliseconds; 0: no alarm.
    latency_ms: float = field(default=2000.0, metadata=_c(min=0.0))


@dataclass(frozen=True)
class RdsResource:
    """An RDS instance or Aurora cluster (``AWS/RDS``)."""

    instance: str = ""
    cluster: str = ""
    #: The engine's ``max_connections``: DatabaseConnections above ``connections_percent`` of it.
    max_connections: int = field(default=100, metadata=_c(min=1))
    connections_percent: float = field(default=80.0, metadata=_c(min=0.0, max=100.0))
    cpu_percent: float = field(default=80.0, metadata=_c(min=0.0, max=100.0))
    #: FreeStorageSpace below this many GiB (instances only); 0: no alarm.
    free_storage_gb: float = field(default=5.0, metadata=_c(min=0.0))


@dataclass(frozen=True)
class EcsResource:
    """An ECS service (``AWS/ECS``)."""

    cluster: str = ""
    service: str = ""
    cpu_percent: float = field(default=80.0, metadata=_c(min=0.0, max=100.0))
    #: Consecutive minutes above ``cpu_percent`` before the alarm (the designs: 3).
    cpu_periods: int = field(default=3, metadata=_c(min=1, max=100))
    memory_percent: float = field(default=90.0, metadata=_c(min=0.0, max=100.0))


@dataclass(frozen=True)
class ElastiCacheResource:
    """An ElastiCache (Redis) cluster (``AWS/ElastiCache``)."""

    cluster: str = ""
    memory_percent: float = field(default=80.0, metadata=_c(min=0.0, max=100.0))
    #: Evictions per 5 minutes above this.
    evictions: int = field(default=0, metadata=_c(min=0))
    cpu_percent: float = field(default=75.0, metadata=_c(min=0.0, max=100.0))


@dataclass(frozen=True)
class LambdaResource:
    """Lambda functions (``AWS/Lambda``)."""

    functions: list[str] = field(default_factory=list)
    #: Duration p99 above this many milliseconds (the designs: 10 s).
    duration_ms: float = field(default=10_000.0, metadata=_c(min=1.0))
    #: Errors, and Throttles, in 5 minutes above these.
    errors: int = field(default=0, metadata=_c(min=0))
    throttles: int = field(default=0, metadata=_c(min=0))


@dataclass(frozen=True)
class ApiGatewayResource:
    """A REST API stage (``AWS/ApiGateway``, dimensions ApiName and Stage)."""

    api_name: str = ""
    stage: str = ""
    error_5xx_percent: float = field(default=5.0, metadata=_c(min=0.0, max=100.0))
    latency_ms: float = field(default=1000.0, metadata=_c(min=0.0))


@dataclass(frozen=True)
class AwsResourcesConfig:
    """The AWS resources around the service: alarms on their AWS metrics and widgets on a dashboard."""

    alb: AlbResource | None = None
    rds: RdsResource | None = None
    ecs: EcsResource | None = None
    elasticache: ElastiCacheResource | None = None
    lambda_: LambdaResource | None = field(default=None, metadata=_c(key="lambda"))
    apigateway: ApiGatewayResource | None = None
    #: The alert tier each resource's alarms go to.
    tier: Literal["critical", "warning", "business"] = "warning"
