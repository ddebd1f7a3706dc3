"""The ``pulsetrace`` command line: one table of sub-commands, each in its own module.

Every command takes ``--config``; errors are one readable line on stderr (a bad
configuration: one line per problem and exit code 2), never a traceback unless
``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: command name → module defining ``register(subparsers, common)``; imported lazily.
COMMANDS: dict[str, str] = {
    "run": "pulsetrace.cli.run",
    "serve": "pulsetrace.cli.health",
    "check": "pulsetrace.cli.health",
    "sla": "pulsetrace.cli.health",
    "config": "pulsetrace.cli.config",
    "traces": "pulsetrace.cli.traces",
    "status": "pulsetrace.cli.traces",
    "servicemap": "pulsetrace.cli.servicemap",
    "cloudwatch": "pulsetrace.cli.cloudwatch",
    "demo": "pulsetrace.cli.demo",
    "ui": "pulsetrace.cli.ui",
    "alert": "pulsetrace.cli.alerts",
    "alerts": "pulsetrace.cli.alerts",
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors: one line and exit 2, like a bad config.
        self.print_usage(sys.stderr)
        sys.stderr.write(f"pulsetrace: error: {message}\n")
        raise SystemExit(2)


def common_options(suppress: bool = True) -> argparse.ArgumentParser:
    """``--config`` and ``--debug``, accepted before or after the command name.

    On the sub-commands the defaults are suppressed, so that ``pulsetrace --config F run``
    keeps the F given before the command instead of a sub-parser's default overwriting it.
    """
    common = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    common.add_argument("--config", metavar="FILE", default=default,
                        help="configuration file (default: $PULSETRACE_CONFIG, ./pulsetrace.yaml)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="show tracebacks")
    return common


def _command_name(argv: Sequence[str]) -> str | None:
    """The first positional word, skipping the value of ``--config``."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--config":
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    common = common_options()
    parser = _Parser(prog="pulsetrace", description="Tracing and health agent for Python services on AWS.",
                     parents=[common_options(suppress=False)])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # Import only the module of the command asked for, so `pulsetrace run` starts fast.
    wanted = _command_name(argv or [])
    modules = [COMMANDS[wanted]] if wanted in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if wanted in COMMANDS:
                # the command asked for cannot load: say why, rather than "invalid choice"
                raise CliError(f"{wanted}: cannot load ({exc})") from exc
            continue  # listing every command: leave out the one that cannot load
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except CliError as exc:
        sys.stderr.write(f"pulsetrace: {exc}\n")
        return exc.code
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pulsetrace.config.problems import ConfigError
    from pulsetrace.config.secrets import mask_text

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    except CliError as exc:
        sys.stderr.write(f"pulsetrace: {mask_text(str(exc))}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        # An error may quote a configuration value (a DSN in a driver's message): masked like any echo.
        sys.stderr.write(f"pulsetrace: {type(exc).__name__}: {mask_text(str(exc))}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    # Run through the importable module, so that ``pulsetrace.cli.main.CliError`` raised by the
    # command modules is the class caught here (not a second ``__main__`` copy).
    from pulsetrace.cli.main import main as _main

    raise SystemExit(_main())
