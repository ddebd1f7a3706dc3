"""``pulsetrace cloudwatch render|apply``: alarms and dashboards as code for what the agent emits.

``render --format cloudformation`` (the default) writes a CloudFormation template (JSON,
which CloudFormation reads as well as YAML); ``--format dashboard-json`` writes the
service dashboard's body for ``aws cloudwatch put-dashboard``; ``--format terraform`` writes
the same topics, alarms and dashboards as Terraform JSON (a ``*.tf.json`` file). ``apply`` creates the same SNS
topics, alarms, composite alarms and dashboard through the API (``AWS_ENDPOINT_URL`` /
``metrics.cloudwatch.endpoint_url`` honoured); running it again updates them in place.
Exit codes: 0 done, 1 when a resource could not be created (one line each), 2 for a
bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pulsetrace.cli.config import command_options
from pulsetrace.cli.main import CliError
from pulsetrace.config.load import Config
from pulsetrace.config.problems import ConfigError
from pulsetrace.metrics.datum import config_problems
from pulsetrace.metrics.render import apply_plan, build_plan, cloudformation, dashboard_body
from pulsetrace.validation import load_config


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    opts = command_options()
    cw = subparsers.add_parser("cloudwatch", parents=[opts], help="CloudWatch alarms and dashboards as code",
                               description="Render or apply the CloudWatch alarms, composite alarms, dashboard and "
                                           "SNS topics for the metrics this configuration emits.")
    actions = cw.add_subparsers(dest="cloudwatch_action", metavar="ACTION", parser_class=type(cw))
    render = actions.add_parser("render", parents=[opts], help="write a CloudFormation template or dashboard JSON",
                                description="Write a CloudFormation template (default) or the dashboard body.")
    render.add_argument("--format", choices=("cloudformation", "dashboard-json", "terraform"), default="cloudformation",
                        help="cloudformation (default), dashboard-json (the service dashboard's body) or "
                             "terraform (Terraform JSON: save as a .tf.json file)")
    render.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    render.add_argument("--region", help="region in the dashboard's widgets (dashboard-json; default: the "
                                         "configured region, $AWS_REGION, us-east-1)")
    render.set_defaults(func=render_command)
    apply = actions.add_parser("apply", parents=[opts], help="create or update them through the CloudWatch API",
                               description="Create or update the SNS topics, alarms and dashboard (idempotent).")
    apply.add_argument("--region", help="AWS region (default: the configured region, $AWS_REGION)")
    apply.add_argument("--no-composite", action="store_true",
                       help="skip composite alarms (for endpoints that do not implement PutCompositeAlarm)")
    apply.set_defaults(func=apply_command)
    cw.set_defaults(func=lambda args: _usage(cw))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("pulsetrace: error: say what to do, e.g. `pulsetrace cloudwatch render`\n")
    return 2


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None))
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _region(args: argparse.Namespace, cfg: Config) -> str:
    return (getattr(args, "region", None) or cfg.metrics.cloudwatch.region or cfg.tracing.xray.region
            or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def render_command(args: argparse.Namespace) -> int:
    cfg = _config(args)
    plan = build_plan(cfg)
    if args.format == "dashboard-json":
        text = json.dumps(json.loads(dashboard_body(plan, _region(args, cfg))), indent=2)
    elif args.format == "terraform":
        from pulsetrace.alerts.forwarder import add_forwarder_terraform
        from pulsetrace.metrics.terraform import terraform

        text = json.dumps(add_forwarder_terraform(terraform(plan), cfg), indent=2)  # alarms to the alert channels
    else:
        from pulsetrace.alerts.forwarder import add_forwarder

        template = cloudformation(plan, f"pulsetrace alarms and dashboard for {cfg.service.name} "
                                        f"({cfg.service.environment})")
        text = json.dumps(add_forwarder(template, cfg), indent=2)  # CloudWatch alarms to the alert channels
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        sys.stderr.write(f"wrote {args.out}\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def apply_command(args: argparse.Namespace) -> int:
    cfg = _config(args)
    region = _region(args, cfg)
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise CliError("boto3 is not installed (pip install 'pulsetrace[aws]')") from None
    from botocore.exceptions import BotoCoreError

    endpoint = cfg.metrics.cloudwatch.endpoint_url or None
    boto_cfg = BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    session = boto3.session.Session(region_name=region)
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint, config=boto_cfg)
    sns = session.client("sns", endpoint_url=endpoint, config=boto_cfg)
    plan = build_plan(cfg)
    try:
        # One cheap call first, so that no credentials / no endpoint is one line, not one per resource.
        sns.list_topics()
    except BotoCoreError as exc:
        raise CliError(f"cannot reach AWS ({region}): {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise CliError(f"AWS refused the request ({region}): {code}") from None
    results = apply_plan(plan, cloudwatch, sns, region, composite=not args.no_composite)
    failed = [r for r in results if not r.ok]
    for r in results:
        line = f"{'ok  ' if r.ok else 'FAIL'}  {r.kind:<16} {r.name}" + (f": {r.error}" if r.error else "")
        (sys.stdout if r.ok else sys.stderr).write(line + "\n")
    sys.stdout.write(f"{len(results) - len(failed)} applied, {len(failed)} failed ({region})\n")
    if any(r.kind == "composite-alarm" and not r.ok for r in failed):
        sys.stderr.write("pulsetrace: composite alarms failed; if this endpoint does not implement "
                         "PutCompositeAlarm, run again with --no-composite\n")
    return 1 if failed else 0
