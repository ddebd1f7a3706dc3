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
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.config_schema import Config, ProbeConfig
from agent.config_validate import ConfigError, Problem, build_config, parse_duration

__all__ = ["Config", "ConfigError", "Problem", "load_config", "find_config_path", "config_from_mapping",
           "masked_dict", "parse_duration", "CONFIG_ENV"]

CONFIG_ENV = "PULSETRACE_CONFIG"
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_FILE_BYTES = 4 * 1024 * 1024


def find_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path("pulsetrace.yaml")
    return default if default.exists() else None


def _read_yaml(path: Path) -> object:
    import yaml  # deferred: keeps `import agent` free of work

    try:
        if path.is_dir():
            raise ConfigError([Problem("", f"{path} is a directory", expected="a YAML file")])
        with path.open("rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem("", f"config file {path} not found")]) from None
    except PermissionError:
        raise ConfigError([Problem("", f"config file {path} is not readable (permission denied)")]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"config file {path} cannot be read: {exc.strerror or exc}")]) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError([Problem("", f"config file {path} is larger than 4 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem("", f"config file {path} is not UTF-8 text")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([Problem("", f"config file {path} is not valid YAML{where}: {reason}")]) from None
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:  # hostile documents
        raise ConfigError([Problem("", f"config file {path} could not be parsed: {type(exc).__name__}")]) from None


def _interpolate(node: object, env: Mapping[str, str], key: str, problems: list[Problem], depth: int = 0) -> object:
    if depth > 50:
        problems.append(Problem(key, "nested too deeply"))
        return None
    if isinstance(node, str):
        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(key, f"environment variable {name} is not set", expected="set it, or "
                                    f"write ${{{name}:-default}}"))
            return ""
        return _VAR_RE.sub(repl, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env, f"{key}.{k}" if key else str(k), problems, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{key}[{i}]", problems, depth + 1) for i, v in enumerate(node)]
    return node


def _set(data: dict[str, Any], dotted: str, value: object) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Environment variables win over the file for the fields they name."""
    if env.get("OTEL_SERVICE_NAME"):
        _set(data, "service.name", env["OTEL_SERVICE_NAME"])
    if env.get("OTEL_RESOURCE_ATTRIBUTES"):
        attrs: dict[str, str] = {}
        for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","):
            if "=" in pair:
                k, v = pair.split("=", 1)
                if k.strip():
                    attrs[k.strip()] = v.strip()
        data["resource_attributes"] = attrs
        if "service.name" in attrs and not env.get("OTEL_SERVICE_NAME"):
            _set(data, "service.name", attrs["service.name"])
        for otel_key, ours in (("deployment.environment", "service.environment"),
                               ("deployment.environment.name", "service.environment"),
                               ("service.version", "service.version")):
            if otel_key in attrs:
                _set(data, ours, attrs[otel_key])
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        _set(data, "tracing.otlp.endpoint", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    if env.get("OTEL_EXPORTER_OTLP_PROTOCOL"):
        _set(data, "tracing.otlp.protocol", env["OTEL_EXPORTER_OTLP_PROTOCOL"])
    if env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"):
        names = [n.strip() for n in env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(",") if n.strip()]
        _set(data, "tracing.instrumentations.disabled", names)
    if env.get("AWS_XRAY_DAEMON_ADDRESS"):
        _set(data, "tracing.xray.daemon_address", env["AWS_XRAY_DAEMON_ADDRESS"])
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        _set(data, "tracing.xray.region", region)
        _set(data, "metrics.cloudwatch.region", region)
    if env.get("AWS_ENDPOINT_URL"):
        _set(data, "tracing.xray.endpoint_url", env["AWS_ENDPOINT_URL"])
        _set(data, "metrics.cloudwatch.endpoint_url", env["AWS_ENDPOINT_URL"])
    if env.get("PULSETRACE_STORE"):
        _set(data, "store.path", env["PULSETRACE_STORE"])


def _host_port_problem(key: str, value: str) -> Problem | None:
    # The X-Ray daemon convention also allows "tcp:HOST:PORT udp:HOST:PORT"; we take the udp part.
    text = value.split("udp:", 1)[1].split()[0] if "udp:" in value else value
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return Problem(key, "not a host:port address", value, "e.g. 127.0.0.1:8081")
    return None


def _semantic_problems(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    p = _host_port_problem("health.listen", cfg.health.listen)
    if p:
        problems.append(p)
    p = _host_port_problem("tracing.xray.daemon_address", cfg.tracing.xray.daemon_address)
    if p:
        problems.append(p)
    endpoint = urlsplit(cfg.tracing.otlp.endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        problems.append(Problem("tracing.otlp.endpoint", "not an http(s) URL", cfg.tracing.otlp.endpoint,
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
        problems.extend(_probe_problems(key, probe))
    out = cfg.metrics.cloudwatch.emf_output
    if not (out == "stdout" or out.startswith("file:") or out.startswith("tcp://") or out.startswith("udp://")):
        problems.append(Problem("metrics.cloudwatch.emf_output", "unknown EMF output", out,
                                "stdout, file:PATH, tcp://HOST:PORT or udp://HOST:PORT"))
    return problems


def _probe_problems(key: str, probe: ProbeConfig) -> list[Problem]:
    need: dict[str, tuple[str, ...]] = {"postgres": ("dsn",), "redis": ("url",), "http": ("url",),
                                        "passive": ("operation",), "custom": ("target",)}
    problems = [Problem(f"{key}.{field}", f"is required for a {probe.type} probe")
                for field in need.get(probe.type, ()) if not getattr(probe, field)]
    if probe.timeout > probe.interval:
        problems.append(Problem(f"{key}.timeout", "longer than the interval", f"{probe.timeout}s",
                                f"<= interval ({probe.interval}s)"))
    if probe.type == "rfid":
        allowed = {"redis_url", "key_pattern", "dsn", "query", "push"}
        for k in probe.source:
            if k not in allowed:
                problems.append(Problem(f"{key}.source.{k}", "unknown key", expected="one of " + ", ".join(sorted(allowed))))
        if not probe.source:
            problems.append(Problem(f"{key}.source", "is required for an rfid probe",
                                    expected="{redis_url, key_pattern}, {dsn, query} or {push: 'true'}"))
    return problems


def config_from_mapping(data: object, env: Mapping[str, str] | None = None, source: str = "") -> Config:
    """Validate a parsed document; raises :class:`ConfigError` with every problem."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the document must be a mapping of sections", _short(data),
                                   "keys such as service, tracing, health")])
    problems: list[Problem] = []
    data = _interpolate(data, env, "", problems)
    assert isinstance(data, dict)
    _apply_env(data, env)
    cfg, build_problems = build_config(Config, data)
    problems.extend(build_problems)
    if cfg is not None and not problems:
        problems.extend(_semantic_problems(cfg))
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, source=source)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find and load the configuration; raises :class:`ConfigError` (never anything else) when invalid."""
    env = os.environ if env is None else env
    found = find_config_path(str(path) if path else None, env)
    try:
        if found is None:
            return config_from_mapping({}, env)
        return config_from_mapping(_read_yaml(found), env, source=str(found))
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError([Problem("", "the document is nested too deeply")]) from None


_MASK = "****"


def mask_url(url: str) -> str:
    """``postgresql://app:pw@host/db?password=x`` → credentials replaced by ``****``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)((?:password|passwd|pwd|secret|token|key|sig|signature|auth)[^=&]*=)[^&]*", r"\1" + _MASK,
                   parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def masked_dict(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for display only)."""
    return _mask_node(cfg)  # type: ignore[no-any-return]


def _mask_node(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("secret"):
                out[f.name] = _mask_secret(value)
            else:
                out[f.name] = _mask_node(value)
        return out
    if isinstance(obj, dict):
        return {k: _mask_node(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_node(v) for v in obj]
    return obj


def _mask_secret(value: object) -> object:
    if isinstance(value, str):
        if not value:
            return ""
        if "://" in value:
            return mask_url(value)
        return _MASK
    if isinstance(value, dict):
        return {k: _mask_secret(v) if not str(k).endswith(("_pattern", "query", "push")) else v
                for k, v in value.items()}
    return _MASK
