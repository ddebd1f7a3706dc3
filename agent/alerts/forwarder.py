"""The CloudWatch alarm forwarder in a CloudFormation template: an SNS→Lambda function per stack that turns the
alert-tier topics' alarm notifications into the agent's own channel messages.

``add_forwarder(template, cfg)`` adds, when ``alerts.channels`` has a Discord, Slack, PagerDuty or
webhook channel: one ``AWS::Lambda::Function`` (Python, standard library only, inline: the source
of :mod:`~pulsetrace.alerts.text`, :mod:`~pulsetrace.alerts.model`, :mod:`~pulsetrace.alerts.formats`
and :mod:`~pulsetrace.alerts.alarm_lambda`, joined with their pulsetrace imports removed), its role
(logs; ``ssm:GetParameter`` under ``/pulsetrace/``; ``secretsmanager:GetSecretValue`` on
``pulsetrace/`` secrets; ``kms:Decrypt`` through those two services only), one template parameter
per channel naming the SSM SecureString parameter (or Secrets Manager secret ARN) that holds its
URL or routing key, and a subscription plus invoke permission per alert-tier topic. No URL, key or
header value is ever written into the template. SNS channels are left out (the alarm already
went through SNS). Pure: returns a new template, does no I/O but reading this package's source.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from importlib import resources
from collections.abc import Callable
from typing import Any

from pulsetrace.alerts.model import SEVERITIES, Alert
from pulsetrace.alerts.routing import channels_for
from pulsetrace.config.schema import AlertChannelConfig, Config

__all__ = ["add_forwarder", "add_forwarder_terraform", "lambda_source", "FORWARDED_TYPES"]

FORWARDED_TYPES = ("discord", "slack", "pagerduty", "webhook")
_MODULES = ("text.py", "model.py", "formats.py", "alarm_lambda.py")
RUNTIME = "python3.12"


def _strip(tree: ast.Module) -> list[ast.stmt]:
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("pulsetrace", "__future__")):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # module docstring
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            continue
        for sub in ast.walk(node):  # function and class docstrings: the template carries code only
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub.body:
                first = sub.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    sub.body = sub.body[1:] or [ast.Pass()]
        body.append(node)
    return body


def lambda_source() -> str:
    """The forwarder's ``index.py``: the modules it needs, joined into one, standard library only."""
    parts = ["# pulsetrace CloudWatch alarm forwarder (generated from pulsetrace.alerts; standard library only)",
             "from __future__ import annotations"]
    pkg = resources.files("pulsetrace.alerts")
    for name in _MODULES:
        tree = ast.parse(pkg.joinpath(name).read_text(encoding="utf-8"))
        parts.append(ast.unparse(ast.Module(body=_strip(tree), type_ignores=[])))
    # ASCII only (non-ASCII exists only inside string literals after unparse, where an escape is the same
    # character): template tools choke on the surrogate pairs JSON would otherwise carry for an emoji.
    return ("\n\n".join(parts) + "\n").encode("ascii", "backslashreplace").decode("ascii")


def _lid(name: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p)[:200] or "Channel"


def routes_by_severity(cfg: Config) -> dict[str, list[str]]:
    """Which forwarded channels each alarm tier goes to (routes matched on severity; a CloudWatch alarm has no probe)."""
    forwarded = {c.name for c in cfg.alerts.channels if c.type in FORWARDED_TYPES}
    out: dict[str, list[str]] = {}
    for severity in SEVERITIES:
        probe = Alert(key="cloudwatch:x", severity=severity, title="", service="", environment="", source="cloudwatch:x",
                      started=0.0)
        names = [n for n in channels_for(probe, cfg.alerts.routes) if n in forwarded]
        if names:
            out[severity] = names
    return out


def secret_default(cfg: Config, channel: str) -> str:
    return f"/pulsetrace/{cfg.service.name}/alerts/{channel}"


def secret_description(c: AlertChannelConfig) -> str:
    what = "routing key" if c.type == "pagerduty" else "webhook URL"
    return (f"SSM SecureString parameter name (or Secrets Manager secret ARN) holding the {c.type} {what} "
            f"of alert channel {c.name}")


def channels_env(channels: list[AlertChannelConfig], ref: Callable[[str], str]) -> str:
    """``PULSETRACE_CHANNELS``: each channel's name, type and a reference (``ref(name)``) to its secret."""
    spec: list[dict[str, str]] = []
    for c in channels:
        entry = {"name": c.name, "type": c.type, "secret": ref(c.name)}
        if c.username:
            entry["username"] = c.username
        if c.type == "pagerduty" and c.url:
            entry["url"] = c.url  # the Events API endpoint is not a secret; the routing key is
        spec.append(entry)
    return json.dumps(spec, separators=(",", ":"))


def add_forwarder(template: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """``template`` with the forwarder added (unchanged when no channel can be forwarded or there is no topic)."""
    channels = [c for c in cfg.alerts.channels if c.type in FORWARDED_TYPES]
    topics = {lid: r for lid, r in template.get("Resources", {}).items() if r.get("Type") == "AWS::SNS::Topic"}
    if not channels or not topics:
        return template
    out = copy.deepcopy(template)
    resources_ = out.setdefault("Resources", {})
    params = out.setdefault("Parameters", {})
    for c in channels:
        params[f"AlertSecret{_lid(c.name)}"] = {"Type": "String", "Default": secret_default(cfg, c.name),
                                                "Description": secret_description(c)}
    channels_json = channels_env(channels, lambda name: "${AlertSecret" + _lid(name) + "}")
    resources_["AlertForwarderRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AWSLambdaBasicExecutionRole"}],
            "Policies": [{"PolicyName": "read-alert-channel-secrets", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "ssm:GetParameter",
                     "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                                             "parameter/pulsetrace/*"}},
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                     "Resource": {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:"
                                             "${AWS::AccountId}:secret:pulsetrace/*"}},
                    {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                     "Condition": {"StringEquals": {"kms:ViaService": [
                         {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
                         {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}]}}}]}}],
        },
    }
    resources_["AlertForwarderFunction"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Description": f"pulsetrace: CloudWatch alarms of {cfg.service.name} to its alert channels",
            "Runtime": RUNTIME, "Handler": "index.handler", "Timeout": 30, "MemorySize": 128,
            "Role": {"Fn::GetAtt": ["AlertForwarderRole", "Arn"]},
            "Code": {"ZipFile": lambda_source()},
            "Environment": {"Variables": {
                "PULSETRACE_SERVICE": cfg.service.name, "PULSETRACE_ENVIRONMENT": cfg.service.environment,
                "PULSETRACE_CHANNELS": {"Fn::Sub": channels_json},
                "PULSETRACE_ROUTES": json.dumps(routes_by_severity(cfg), separators=(",", ":")),
                "PULSETRACE_RUNBOOK_URL": cfg.alerts.runbook_url,
            }},
        },
    }
    for lid in sorted(topics):
        resources_[f"AlertForwarderSubscription{lid}"] = {
            "Type": "AWS::SNS::Subscription",
            "Properties": {"Protocol": "lambda", "TopicArn": {"Ref": lid},
                           "Endpoint": {"Fn::GetAtt": ["AlertForwarderFunction", "Arn"]}}}
        resources_[f"AlertForwarderPermission{lid}"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {"Action": "lambda:InvokeFunction", "Principal": "sns.amazonaws.com",
                           "SourceArn": {"Ref": lid}, "FunctionName": {"Ref": "AlertForwarderFunction"}}}
    out.setdefault("Outputs", {})["AlertForwarderFunction"] = {"Value": {"Ref": "AlertForwarderFunction"}}
    return out


def _tf_escape(text: str) -> str:
    # Terraform reads every JSON string as a template: a literal ${ or %{ must be doubled.
    return text.replace("${", "$${").replace("%{", "%%{")


def add_forwarder_terraform(doc: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The Terraform JSON ``doc`` with the same forwarder (``--format terraform``); the code is zipped by
    the ``hashicorp/archive`` provider's ``archive_file``. Unchanged without channels or topics."""
    channels = [c for c in cfg.alerts.channels if c.type in FORWARDED_TYPES]
    topics = sorted((doc.get("resource") or {}).get("aws_sns_topic") or {})
    if not channels or not topics:
        return doc
    out = copy.deepcopy(doc)
    out["terraform"].setdefault("required_providers", {})["archive"] = {"source": "hashicorp/archive",
                                                                       "version": ">= 2.4"}
    variables = out.setdefault("variable", {})
    for c in channels:
        variables[f"alert_secret_{_tf_name(c.name)}"] = {"type": "string", "default": secret_default(cfg, c.name),
                                                         "description": secret_description(c)}
    data = out.setdefault("data", {})
    data.setdefault("aws_region", {}).setdefault("current", {})
    data.setdefault("aws_caller_identity", {}).setdefault("current", {})
    data.setdefault("aws_partition", {}).setdefault("current", {})
    data["archive_file"] = {"alert_forwarder": {
        "type": "zip", "output_path": "${path.module}/pulsetrace-alert-forwarder.zip",
        "source_content": _tf_escape(lambda_source()), "source_content_filename": "index.py"}}
    arn = "arn:${data.aws_partition.current.partition}"
    where = "${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": f"{arn}:ssm:{where}:parameter/pulsetrace/*"},
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": f"{arn}:secretsmanager:{where}:secret:pulsetrace/*"},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {
            "kms:ViaService": ["ssm.${data.aws_region.current.name}.amazonaws.com",
                               "secretsmanager.${data.aws_region.current.name}.amazonaws.com"]}}}]}
    assume = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "lambda.amazonaws.com"}}]}
    res = out.setdefault("resource", {})
    res.setdefault("aws_iam_role", {})["alert_forwarder"] = {
        "name_prefix": "pulsetrace-alerts-", "assume_role_policy": json.dumps(assume)}
    res.setdefault("aws_iam_role_policy_attachment", {})["alert_forwarder_logs"] = {
        "role": "${aws_iam_role.alert_forwarder.name}",
        "policy_arn": f"{arn}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}
    res.setdefault("aws_iam_role_policy", {})["alert_forwarder_secrets"] = {
        "name": "read-alert-channel-secrets", "role": "${aws_iam_role.alert_forwarder.id}",
        "policy": json.dumps(policy)}
    name = "-".join(p for p in ("pulsetrace", _tf_name(cfg.service.name), _tf_name(cfg.service.environment),
                                "alerts") if p).replace("_", "-")[:64]
    res.setdefault("aws_lambda_function", {})["alert_forwarder"] = {
        "function_name": name, "description": f"pulsetrace: CloudWatch alarms of {cfg.service.name} to its alert "
                                              "channels",
        "role": "${aws_iam_role.alert_forwarder.arn}", "runtime": RUNTIME, "handler": "index.handler",
        "timeout": 30, "memory_size": 128, "filename": "${data.archive_file.alert_forwarder.output_path}",
        "source_code_hash": "${data.archive_file.alert_forwarder.output_base64sha256}",
        "environment": {"variables": {
            "PULSETRACE_SERVICE": _tf_escape(cfg.service.name),
            "PULSETRACE_ENVIRONMENT": _tf_escape(cfg.service.environment),
            "PULSETRACE_CHANNELS": channels_env(channels, lambda n: "${var.alert_secret_" + _tf_name(n) + "}"),
            "PULSETRACE_ROUTES": json.dumps(routes_by_severity(cfg), separators=(",", ":")),
            "PULSETRACE_RUNBOOK_URL": _tf_escape(cfg.alerts.runbook_url)}},
        "depends_on": ["aws_iam_role_policy_attachment.alert_forwarder_logs"]}
    subs = res.setdefault("aws_sns_topic_subscription", {})
    perms = res.setdefault("aws_lambda_permission", {})
    for tier in topics:
        subs[f"alert_forwarder_{tier}"] = {"topic_arn": f"${{aws_sns_topic.{tier}.arn}}", "protocol": "lambda",
                                          "endpoint": "${aws_lambda_function.alert_forwarder.arn}"}
        perms[f"alert_forwarder_{tier}"] = {"statement_id": f"pulsetrace-sns-{tier}", "action": "lambda:InvokeFunction",
                                           "function_name": "${aws_lambda_function.alert_forwarder.function_name}",
                                           "principal": "sns.amazonaws.com",
                                           "source_arn": f"${{aws_sns_topic.{tier}.arn}}"}
    return out


def _tf_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "x"
