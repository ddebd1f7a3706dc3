"""Alarms and dashboard widgets for the AWS resources around the service (``metrics.aws_resources``).

Each resource's alarms watch the metrics AWS publishes for it (``AWS/ApplicationELB``,
``AWS/RDS``, ``AWS/ECS``, ``AWS/ElastiCache``, ``AWS/Lambda``, ``AWS/ApiGateway``) with the
dimensions AWS uses, at the thresholds the monitoring designs use (each a configuration key
with that default: see docs/cloudwatch.md), and notify ``aws_resources.tier``. A resource
whose identifying names are missing gets no alarm (an alarm on a metric that never arrives
would be worse than none). Pure data: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulsetrace.metrics.plan import MetricAlarm, Pairs, dims, fmt, metric_stat, name_part, widget

if TYPE_CHECKING:
    from pulsetrace.config.schema import AwsResourcesConfig

GIB = 1024 ** 3


def _simple(ns: str, metric: str, pairs: Pairs, stat: str, period: int, threshold: float, op: str, *,
            periods: int = 1, datapoints: int | None = None, missing: str = "notBreaching") -> dict[str, Any]:
    params: dict[str, Any] = {"Namespace": ns, "MetricName": metric, "Dimensions": dims(pairs), "Period": period,
                              "EvaluationPeriods": periods, "Threshold": threshold, "ComparisonOperator": op,
                              "TreatMissingData": missing}
    if stat.startswith("p"):
        params["ExtendedStatistic"] = stat
    else:
        params["Statistic"] = stat
    if datapoints is not None:
        params["DatapointsToAlarm"] = min(datapoints, periods)
    return params


def resource_alarms(res: AwsResourcesConfig, stem: str) -> list[MetricAlarm]:
    """Every alarm ``res`` configures (see the module docstring)."""
    out: list[MetricAlarm] = []
    tier = res.tier

    def add(name: str, subject: str, description: str, params: dict[str, Any]) -> None:
        out.append(MetricAlarm(f"{stem}-{name_part(name)}", description, tier, params, subject=subject))

    gt, ge, lt = "GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold"
    key: Pairs
    if res.alb is not None:
        alb = res.alb
        ns = "AWS/ApplicationELB"
        if alb.load_balancer:
            lb = (("LoadBalancer", alb.load_balancer),)
            add("alb-5xx-rate", "alb", f"ALB {alb.load_balancer}: 5XX above {fmt(alb.error_5xx_percent)} % of "
                f"requests over 5 minutes (load balancer and target 5XX).", {"Metrics": [
                    {"Id": "elb", "MetricStat": metric_stat(ns, "HTTPCode_ELB_5XX_Count", lb, 300, "Sum"),
                     "ReturnData": False},
                    {"Id": "tgt", "MetricStat": metric_stat(ns, "HTTPCode_Target_5XX_Count", lb, 300, "Sum"),
                     "ReturnData": False},
                    {"Id": "req", "MetricStat": metric_stat(ns, "RequestCount", lb, 300, "Sum"), "ReturnData": False},
                    {"Id": "rate", "Expression": "IF(req > 0, 100 * (FILL(elb, 0) + FILL(tgt, 0)) / req, 0)",
                     "Label": "ALB 5XX %", "ReturnData": True},
                ], "EvaluationPeriods": 1, "Threshold": alb.error_5xx_percent, "ComparisonOperator": gt,
                    "TreatMissingData": "notBreaching"})
            if alb.latency_ms > 0:
                add("alb-latency", "alb", f"ALB {alb.load_balancer}: target response time p99 above "
                    f"{fmt(alb.latency_ms)} ms.", _simple(ns, "TargetResponseTime", lb, "p99", 60,
                                                         alb.latency_ms / 1000.0, gt, periods=5, datapoints=3))
        if alb.load_balancer and alb.target_group:
            tg = (("TargetGroup", alb.target_group), ("LoadBalancer", alb.load_balancer))
            add("alb-unhealthy-hosts", "alb", f"ALB target group {alb.target_group}: {alb.unhealthy_hosts} or more "
                f"unhealthy targets.", _simple(ns, "UnHealthyHostCount", tg, "Maximum", 60, alb.unhealthy_hosts,
                                               ge, periods=3, datapoints=2))
    if res.rds is not None and (res.rds.instance or res.rds.cluster):
        rds = res.rds
        ns = "AWS/RDS"
        key = (("DBInstanceIdentifier", rds.instance),) if rds.instance else (
            ("DBClusterIdentifier", rds.cluster),)
        ident = rds.instance or rds.cluster
        limit = rds.max_connections * rds.connections_percent / 100.0
        add("rds-connections", "rds", f"RDS {ident}: connections above {fmt(rds.connections_percent)} % of "
            f"max_connections ({fmt(limit)} of {rds.max_connections}).",
            _simple(ns, "DatabaseConnections", key, "Maximum", 60, limit, gt, periods=5, datapoints=3))
        add("rds-cpu", "rds", f"RDS {ident}: CPU above {fmt(rds.cpu_percent)} % for 15 minutes.",
            _simple(ns, "CPUUtilization", key, "Average", 300, rds.cpu_percent, gt, periods=3, datapoints=3))
        if rds.instance and rds.free_storage_gb > 0:
            add("rds-free-storage", "rds", f"RDS {ident}: free storage below {fmt(rds.free_storage_gb)} GiB.",
                _simple(ns, "FreeStorageSpace", key, "Minimum", 300, rds.free_storage_gb * GIB, lt))
    if res.ecs is not None and res.ecs.cluster and res.ecs.service:
        ecs = res.ecs
        ns = "AWS/ECS"
        key = (("ClusterName", ecs.cluster), ("ServiceName", ecs.service))
        add("ecs-cpu", "ecs", f"ECS {ecs.cluster}/{ecs.service}: CPU above {fmt(ecs.cpu_percent)} % for "
            f"{ecs.cpu_periods} consecutive minutes.",
            _simple(ns, "CPUUtilization", key, "Average", 60, ecs.cpu_percent, gt, periods=ecs.cpu_periods,
                    datapoints=ecs.cpu_periods))
        add("ecs-memory", "ecs", f"ECS {ecs.cluster}/{ecs.service}: memory above {fmt(ecs.memory_percent)} %.",
            _simple(ns, "MemoryUtilization", key, "Average", 60, ecs.memory_percent, gt, periods=3, datapoints=3))
    if res.elasticache is not None and res.elasticache.cluster:
        ec = res.elasticache
        ns = "AWS/ElastiCache"
        key = (("CacheClusterId", ec.cluster),)
        add("elasticache-memory", "elasticache", f"ElastiCache {ec.cluster}: memory above "
            f"{fmt(ec.memory_percent)} %.", _simple(ns, "DatabaseMemoryUsagePercentage", key, "Average", 300,
                                                    ec.memory_percent, gt, periods=2, datapoints=2))
        add("elasticache-evictions", "elasticache", f"ElastiCache {ec.cluster}: more than {ec.evictions} "
            f"evictions in 5 minutes.", _simple(ns, "Evictions", key, "Sum", 300, ec.evictions, gt))
        add("elasticache-cpu", "elasticache", f"ElastiCache {ec.cluster}: engine CPU above {fmt(ec.cpu_percent)} %.",
            _simple(ns, "EngineCPUUtilization", key, "Average", 300, ec.cpu_percent, gt, periods=2, datapoints=2))
    if res.lambda_ is not None:
        fn_cfg = res.lambda_
        ns = "AWS/Lambda"
        for fn in fn_cfg.functions:
            key = (("FunctionName", fn),)
            add(f"lambda-{fn}-duration", "lambda", f"Lambda {fn}: duration p99 above {fmt(fn_cfg.duration_ms)} ms.",
                _simple(ns, "Duration", key, "p99", 300, fn_cfg.duration_ms, gt))
            add(f"lambda-{fn}-errors", "lambda", f"Lambda {fn}: more than {fn_cfg.errors} errors in 5 minutes.",
                _simple(ns, "Errors", key, "Sum", 300, fn_cfg.errors, gt))
            add(f"lambda-{fn}-throttles", "lambda", f"Lambda {fn}: more than {fn_cfg.throttles} throttles in "
                f"5 minutes.", _simple(ns, "Throttles", key, "Sum", 300, fn_cfg.throttles, gt))
    if res.apigateway is not None and res.apigateway.api_name and res.apigateway.stage:
        api = res.apigateway
        ns = "AWS/ApiGateway"
        key = (("ApiName", api.api_name), ("Stage", api.stage))
        # 5XXError is 0 or 1 per request: its Average over a period is the 5XX share.
        add("apigateway-5xx-rate", "apigateway", f"API Gateway {api.api_name}/{api.stage}: 5XX above "
            f"{fmt(api.error_5xx_percent)} % of requests over 5 minutes.",
            _simple(ns, "5XXError", key, "Average", 300, api.error_5xx_percent / 100.0, gt))
        if api.latency_ms > 0:
            add("apigateway-latency", "apigateway", f"API Gateway {api.api_name}/{api.stage}: latency p99 above "
                f"{fmt(api.latency_ms)} ms.", _simple(ns, "Latency", key, "p99", 60, api.latency_ms, gt, periods=5,
                                                     datapoints=3))
    return out


def resource_widgets(res: AwsResourcesConfig, y: int) -> tuple[list[dict[str, Any]], int]:
    """Widgets for the resources dashboard from row ``y``; returns them and the next free row."""
    rows: list[tuple[str, list[Any], str]] = []
    if res.alb is not None and res.alb.load_balancer:
        lb = ["LoadBalancer", res.alb.load_balancer]
        rows.append(("ALB requests and 5XX", [["AWS/ApplicationELB", "RequestCount", *lb],
                                              ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", *lb],
                                              ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", *lb]], "Sum"))
        rows.append(("ALB target response time p99 (s)", [["AWS/ApplicationELB", "TargetResponseTime", *lb]], "p99"))
        if res.alb.target_group:
            rows.append(("ALB healthy / unhealthy targets",
                         [["AWS/ApplicationELB", m, "TargetGroup", res.alb.target_group, *lb]
                          for m in ("HealthyHostCount", "UnHealthyHostCount")], "Maximum"))
    if res.rds is not None and (res.rds.instance or res.rds.cluster):
        key = ["DBInstanceIdentifier", res.rds.instance] if res.rds.instance else ["DBClusterIdentifier",
                                                                                  res.rds.cluster]
        rows.append(("RDS connections", [["AWS/RDS", "DatabaseConnections", *key]], "Maximum"))
        rows.append(("RDS CPU (%)", [["AWS/RDS", "CPUUtilization", *key]], "Average"))
        if res.rds.instance:
            rows.append(("RDS free storage (bytes)", [["AWS/RDS", "FreeStorageSpace", *key]], "Minimum"))
    if res.ecs is not None and res.ecs.cluster and res.ecs.service:
        key = ["ClusterName", res.ecs.cluster, "ServiceName", res.ecs.service]
        rows.append(("ECS CPU and memory (%)", [["AWS/ECS", "CPUUtilization", *key],
                                                ["AWS/ECS", "MemoryUtilization", *key]], "Average"))
    if res.elasticache is not None and res.elasticache.cluster:
        key = ["CacheClusterId", res.elasticache.cluster]
        rows.append(("ElastiCache memory and CPU (%)", [["AWS/ElastiCache", "DatabaseMemoryUsagePercentage", *key],
                                                        ["AWS/ElastiCache", "EngineCPUUtilization", *key]], "Average"))
        rows.append(("ElastiCache evictions", [["AWS/ElastiCache", "Evictions", *key]], "Sum"))
    if res.lambda_ is not None and res.lambda_.functions:
        fns = res.lambda_.functions
        rows.append(("Lambda duration p99 (ms)", [["AWS/Lambda", "Duration", "FunctionName", f] for f in fns], "p99"))
        rows.append(("Lambda errors and throttles", [["AWS/Lambda", m, "FunctionName", f] for f in fns
                                                     for m in ("Errors", "Throttles")], "Sum"))
        rows.append(("Lambda invocations", [["AWS/Lambda", "Invocations", "FunctionName", f] for f in fns], "Sum"))
    if res.apigateway is not None and res.apigateway.api_name and res.apigateway.stage:
        key = ["ApiName", res.apigateway.api_name, "Stage", res.apigateway.stage]
        rows.append(("API Gateway requests, 4XX, 5XX", [["AWS/ApiGateway", "Count", *key],
                                                        ["AWS/ApiGateway", "4XXError", *key],
                                                        ["AWS/ApiGateway", "5XXError", *key]], "Sum"))
        rows.append(("API Gateway latency p99 (ms)", [["AWS/ApiGateway", "Latency", *key],
                                                      ["AWS/ApiGateway", "IntegrationLatency", *key]], "p99"))
    widgets = [widget((i % 3) * 8, y + (i // 3) * 6, 8, 6, title, metrics, stat=stat)
               for i, (title, metrics, stat) in enumerate(rows)]
    return widgets, y + ((len(rows) + 2) // 3) * 6
