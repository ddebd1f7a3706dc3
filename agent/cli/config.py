"""``pulsetrace config validate [FILE]``: check a configuration, show the effective one.

Valid: the effective configuration (file + interpolation + environment overrides +
defaults) as YAML on stdout, secrets masked, exit 0. Invalid: one line per problem
on stderr (``key: problem (got ..., expected ...)``), exit 2. Whatever the file
holds, this never prints a traceback and never prints a secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pulsetrace.config.build import DURATION_KEYS, format_duration
from pulsetrace.config.load import find_config_path
from pulsetrace.config.secrets import masked_dict
from pulsetrace.validation import load_config


def command_options() -> argparse.ArgumentParser:
    """``--config``/``--debug`` for sub-commands (defaults suppressed: see :func:`pulsetrace.cli.main.common_options`)."""
    from pulsetrace.cli.main import common_options

    return common_options()


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    opts = command_options()
    config = subparsers.add_parser("config", parents=[opts], help="check the configuration",
                                   description="Check a pulsetrace configuration.")
    actions = config.add_subparsers(dest="config_action", metavar="ACTION", parser_class=type(config))
    validate = actions.add_parser(
        "validate", parents=[opts], help="validate a configuration and print the effective one",
        description="Validate FILE (or --config, $PULSETRACE_CONFIG, ./pulsetrace.yaml) and print the effective "
                    "configuration with secrets masked. Exit 0 when valid, 2 with one line per problem otherwise.")
    validate.add_argument("file", nargs="?", metavar="FILE", help="the file to check")
    validate.add_argument("--json", action="store_true", help="print the effective configuration as JSON")
    validate.set_defaults(func=validate_command)
    config.set_defaults(func=lambda args: _usage(config))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("pulsetrace: error: say what to do with the configuration, e.g. `pulsetrace config validate`\n")
    return 2


def validate_command(args: argparse.Namespace) -> int:
    explicit = args.file or getattr(args, "config", None)
    found = find_config_path(explicit, os.environ)
    cfg = load_config(found)  # ConfigError → pulsetrace.cli.main prints one line per problem, exit 2
    data = masked_dict(cfg)
    if args.json:  # machine-readable: durations stay numbers of seconds
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return 0
    import yaml

    origin = f"from {found}" if found is not None else "no configuration file found: all defaults"
    sys.stdout.write(f"# pulsetrace: configuration is valid ({origin}); effective values, secrets masked\n")
    sys.stdout.write(yaml.safe_dump(_readable_durations(data), sort_keys=False, allow_unicode=True,
                                    default_flow_style=False))
    return 0


def _readable_durations(node: Any, key: str = "") -> Any:
    """Durations back in the file's syntax (``retention: 7d``), so the output is a valid config again."""
    if isinstance(node, dict):
        return {k: _readable_durations(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_readable_durations(v, key) for v in node]
    if key in DURATION_KEYS and isinstance(node, float):
        return format_duration(node)
    return node
