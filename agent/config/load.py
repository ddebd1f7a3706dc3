"""Find, read, interpolate and validate the pulsetrace configuration.

Order: ``--config FILE``, ``$PULSETRACE_CONFIG``, ``./pulsetrace.yaml``; none at all
is valid (every default). ``${VAR}`` and ``${VAR:-default}`` are interpolated in
string values; standard ``OTEL_*`` / ``AWS_*`` variables then win over the file.

Never raises anything but :class:`ConfigError` for bad input, whatever the file holds.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pulsetrace.config.build import build_config
from pulsetrace.config.problems import ConfigError, Problem, parse_duration
from pulsetrace.config.schema import Config, SamplingConfig
from pulsetrace.config.secrets import mask_url, masked_dict

__all__ = ["Config", "ConfigError", "Problem", "load_config", "find_config_path", "config_from_mapping",
           "masked_dict", "parse_duration", "CONFIG_ENV"]

CONFIG_ENV = "PULSETRACE_CONFIG"

#: A component's own rules for the configuration, run once the types are right.
Check = Callable[[Config], list[Problem]]


@dataclass(frozen=True)
class Components:
    """What the layers above know about the configuration, handed down by pulsetrace.validation.

    ``choice_sets``: the registered names a field may take (``exporter``, ``probe_type``,
    ``instrumentation``); ``checks``: each component's own rules (probe types, CloudWatch,
    the X-Ray rules file). Without them only the types and this module's own rules are checked.
    """

    choice_sets: Mapping[str, Sequence[str]] = field(default_factory=dict)
    checks: Sequence[Check] = ()


NO_COMPONENTS = Components()
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: A configuration file is a few KiB; the cap bounds the pure-Python YAML parse (about 5 s per MiB).
_MAX_FILE_BYTES = 512 * 1024
#: Nodes visited while interpolating: bounds YAML alias "billion laughs" expansion.
_MAX_NODES = 100_000
_MAX_DEPTH = 50
#: Characters ``${VAR}`` substitution may add to the document in all: a small file referring to a
#: large variable many times would otherwise grow without bound (and every later step with it).
MAX_INTERPOLATED_CHARS = 1024 * 1024


def find_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path("pulsetrace.yaml")
    return default if default.exists() else None


def _file_problem(path: Path, problem: str, expected: str = "") -> ConfigError:
    return ConfigError([Problem(str(path), problem, expected=expected)])


def _read_yaml(path: Path) -> object:
    import yaml  # deferred: keeps `import agent` free of work

    try:
        # stat before open: opening a FIFO would block until a writer appears.
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise _file_problem(path, "is a directory", "a YAML file")
        if not stat.S_ISREG(mode):
            raise _file_problem(path, "is not a regular file", "a YAML file")
        with path.open("rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _file_problem(path, "config file not found") from None
    except PermissionError:
        raise _file_problem(path, "config file is not readable (permission denied)") from None
    except OSError as exc:
        raise _file_problem(path, f"config file cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise _file_problem(path, f"config file is larger than {_MAX_FILE_BYTES // 1024} KiB")
    if b"\x00" in raw:
        raise _file_problem(path, "config file is binary, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _file_problem(path, "config file is not UTF-8 text") from None
    try:
        # The pure-Python loader on purpose: libyaml's composer recurses in C and
        # crashes the process on a deeply nested document instead of raising.
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise _file_problem(path, f"not valid YAML{where}: {reason}") from None
    except RecursionError:
        raise _file_problem(path, "the document is nested too deeply", f"at most {_MAX_DEPTH} levels") from None
    except (ValueError, OverflowError, TypeError, MemoryError) as exc:  # hostile documents
        raise _file_problem(path, f"could not be parsed ({type(exc).__name__})") from None


class _TooBig(Exception):
    pass


class _TooLarge(Exception):
    def __init__(self, key: str, name: str) -> None:
        super().__init__(key)
        self.key = key
        self.name = name


class _Interpolator:
    """Substitutes ``${VAR}`` / ``${VAR:-default}`` in every string, visiting a bounded number of nodes."""

    def __init__(self, env: Mapping[str, str], problems: list[Problem]) -> None:
        self.env = env
        self.problems = problems
        self.visited = 0
        self.added = 0

    def walk(self, node: object, key: str, depth: int = 0) -> object:
        self.visited += 1
        if self.visited > _MAX_NODES:
            raise _TooBig
        if depth > _MAX_DEPTH:
            raise _TooBig
        if isinstance(node, str):
            return _VAR_RE.sub(lambda m: self.substitute(m, key), node) if "${" in node else node
        if isinstance(node, dict):
            return {k: self.walk(v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(node)]
        return node

    def substitute(self, match: re.Match[str], key: str) -> str:
        name, default = match.group(1), match.group(2)
        value = self.env.get(name)
        if value is not None and (value or default is None):
            return self.count(value, key, name)
        if default is not None:
            return self.count(default, key, name)  # ${VAR:-default}: also when VAR is set but empty, as in the shell
        self.problems.append(Problem(key, f"environment variable {name} is not set",
                                     expected=f"{name} set, or ${{{name}:-default}} in the file"))
        return ""


    def count(self, value: str, key: str, name: str) -> str:
        self.added += len(value)
        if self.added > MAX_INTERPOLATED_CHARS:
            raise _TooLarge(key, name)
        return value


def _set(data: dict[str, Any], dotted: str, value: object) -> bool:
    """Set ``a.b.c`` in ``data``; a section the file gave as a non-mapping is left for the validator."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            return False
        node = child
    node[parts[-1]] = value
    return True


def _resource_attributes(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` with percent-encoded values, as the OpenTelemetry specification gives it."""
    attrs: dict[str, str] = {}
    for pair in text.split(","):
        k, sep, v = pair.partition("=")
        if sep and k.strip():
            attrs[unquote(k.strip())] = unquote(v.strip())
    return attrs


def _apply_env(data: dict[str, Any], env: Mapping[str, str], instrumentations: Sequence[str] | None) -> dict[str, str]:
    """Environment variables win over the file for the fields they name.

    Returns ``{config key: variable name}`` for every key set this way, so that a
    problem with such a value can say where it came from.
    """
    origin: dict[str, str] = {}

    def put(key: str, value: object, var: str) -> None:
        if _set(data, key, value):
            origin[key] = var

    if env.get("OTEL_RESOURCE_ATTRIBUTES"):
        attrs = _resource_attributes(env["OTEL_RESOURCE_ATTRIBUTES"])
        put("resource_attributes", attrs, "OTEL_RESOURCE_ATTRIBUTES")
        for otel_key, ours in (("service.name", "service.name"),
                               ("deployment.environment", "service.environment"),
                               ("deployment.environment.name", "service.environment"),
                               ("service.version", "service.version")):
            if attrs.get(otel_key):
                put(ours, attrs[otel_key], "OTEL_RESOURCE_ATTRIBUTES")
    if env.get("OTEL_SERVICE_NAME"):  # wins over service.name in OTEL_RESOURCE_ATTRIBUTES (OTel spec)
        put("service.name", env["OTEL_SERVICE_NAME"], "OTEL_SERVICE_NAME")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # the specific one wins
        if env.get(var):
            put("tracing.otlp.endpoint", env[var].strip(), var)
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        if env.get(var):
            put("tracing.otlp.protocol", env[var].strip(), var)
    if "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in env:
        # Names of instrumentations pulsetrace does not activate (urllib3, requests, ...) are
        # meant for other distros sharing the variable: ignored, not a reason to refuse to start.
        names = [n.strip() for n in env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(",")]
        put("tracing.instrumentations.disabled",
            [n for n in names if n and (instrumentations is None or n in instrumentations)],
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    if env.get("AWS_XRAY_DAEMON_ADDRESS"):
        put("tracing.xray.daemon_address", env["AWS_XRAY_DAEMON_ADDRESS"].strip(), "AWS_XRAY_DAEMON_ADDRESS")
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION"):  # AWS_REGION wins, as in the AWS SDKs
        if env.get(var):
            put("tracing.xray.region", env[var].strip(), var)
            put("metrics.cloudwatch.region", env[var].strip(), var)
    if env.get("AWS_ENDPOINT_URL"):
        put("tracing.xray.endpoint_url", env["AWS_ENDPOINT_URL"].strip(), "AWS_ENDPOINT_URL")
        put("metrics.cloudwatch.endpoint_url", env["AWS_ENDPOINT_URL"].strip(), "AWS_ENDPOINT_URL")
    if env.get("PULSETRACE_STORE"):
        put("store.path", env["PULSETRACE_STORE"], "PULSETRACE_STORE")
    return origin


def _blame_env(problems: list[Problem], origin: Mapping[str, str]) -> list[Problem]:
    """Say which environment variable gave a bad value (the file may not even mention the key)."""
    out = []
    for p in problems:
        var = next((v for k, v in origin.items() if p.key == k or p.key.startswith((k + ".", k + "["))), None)
        out.append(dataclasses.replace(p, problem=f"{p.problem}, from ${var}") if var else p)
    return out


def _host_port_problem(key: str, value: str, allow_any_port: bool = False) -> Problem | None:
    # The X-Ray daemon convention also allows "tcp:HOST:PORT udp:HOST:PORT"; we take the udp part.
    text = value.split("udp:", 1)[1].split()[0] if "udp:" in value else value
    host, sep, port = text.rpartition(":")
    lowest = 0 if allow_any_port else 1  # a listen address may ask for any free port with 0
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        return Problem(key, "not a host:port address", value, "e.g. 127.0.0.1:8081")
    return None


def _semantic_problems(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    p = _host_port_problem("health.listen", cfg.health.listen, allow_any_port=True)
    if p:
        problems.append(p)
    p = _host_port_problem("tracing.xray.daemon_address", cfg.tracing.xray.daemon_address)
    if p:
        problems.append(p)
    try:
        endpoint = urlsplit(cfg.tracing.otlp.endpoint)
        port_ok = endpoint.port is None or 0 < endpoint.port < 65536
        url_ok = endpoint.scheme in ("http", "https") and bool(endpoint.hostname) and port_ok
    except ValueError:
        url_ok = False
    if not url_ok:
        problems.append(Problem("tracing.otlp.endpoint", "not an http(s) URL", repr(mask_url(cfg.tracing.otlp.endpoint)),
                                "e.g. http://127.0.0.1:4318"))
    seen: set[str] = set()
    for i, probe in enumerate(cfg.health.probes):
        key = f"health.probes[{i}]"
        if not probe.name or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", probe.name):
            problems.append(Problem(f"{key}.name", "invalid probe name", probe.name,
                                    "1-64 characters of letters, digits, '_', '.', '-'"))
        if probe.name in seen:
            problems.append(Problem(f"{key}.name", "duplicate probe name", probe.name, "unique names"))
        seen.add(probe.name)
    return problems


def config_from_mapping(data: object, env: Mapping[str, str] | None = None, source: str = "",
                        components: Components = NO_COMPONENTS) -> Config:
    """Validate a parsed document; raises :class:`ConfigError` with every problem."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the document must be a mapping of sections", _kind(data),
                                   "keys such as service, tracing, health")])
    problems: list[Problem] = []
    try:
        data = _Interpolator(env, problems).walk(data, "")
    except _TooLarge as exc:
        raise ConfigError([Problem(exc.key, f"interpolating ${{{exc.name}}} makes the configuration too large",
                                   expected=f"at most {MAX_INTERPOLATED_CHARS // 1024} KiB of substituted "
                                            "values in all")]) from None
    except (_TooBig, RecursionError):
        raise ConfigError([Problem("", "the document is nested too deeply or expands too much (YAML aliases?)",
                                   expected=f"at most {_MAX_DEPTH} levels and {_MAX_NODES} values")]) from None
    assert isinstance(data, dict)
    origin = _apply_env(data, env, components.choice_sets.get("instrumentation"))
    cfg, build_problems = build_config(Config, data, components.choice_sets)
    problems.extend(build_problems)
    if cfg is not None and not problems:
        problems.extend(_semantic_problems(cfg))
        for check in components.checks:
            problems.extend(check(cfg))
    if problems or cfg is None:
        raise ConfigError(_blame_env(problems, origin))
    return dataclasses.replace(_with_default_tiers(cfg), source=source)


def _with_default_tiers(cfg: Config) -> Config:
    """A file naming some tiers keeps the defaults of the others (``tiers: {critical: ...}`` keeps ``health``)."""
    sampling = cfg.tracing.sampling
    defaults = SamplingConfig().tiers
    if all(name in sampling.tiers for name in defaults):
        return cfg
    tiers = {**defaults, **sampling.tiers}
    tracing = dataclasses.replace(cfg.tracing, sampling=dataclasses.replace(sampling, tiers=tiers))
    return dataclasses.replace(cfg, tracing=tracing)


def _kind(value: object) -> str:
    # The type, not the value: a mistaken argument (an .env file) must not echo its secrets.
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a value of type {type(value).__name__}"


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                components: Components = NO_COMPONENTS) -> Config:
    """Find and load the configuration; raises :class:`ConfigError` (never anything else) when invalid."""
    env = os.environ if env is None else env
    found = find_config_path(str(path) if path else None, env)
    try:
        if found is None:
            return config_from_mapping({}, env, components=components)
        return config_from_mapping(_read_yaml(found), env, source=str(found), components=components)
    except ConfigError as exc:
        # A problem with the document as a whole names the file rather than "<root>".
        raise ConfigError([dataclasses.replace(p, key=str(found)) if not p.key and found is not None else p
                           for p in exc.problems]) from None
    except RecursionError:
        raise ConfigError([Problem(str(found or ""), "the document is nested too deeply")]) from None
