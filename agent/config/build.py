"""Turn a parsed YAML mapping into the typed :class:`~pulsetrace.config.schema.Config`.

One pass collects every problem as a :class:`Problem` (key path, what is wrong, the
value seen, what was expected) instead of stopping at the first, so that
``pulsetrace config validate`` can print one line per problem. This module never
raises on user input: it only raises :class:`ConfigError` carrying the problems.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from pulsetrace.config.problems import ConfigError, Problem, did_you_mean, format_duration, parse_duration

__all__ = ["DURATION_KEYS", "ConfigError", "Problem", "build_config", "did_you_mean", "format_duration",
           "parse_duration"]

# Numbers and booleans written as strings, as ``${VAR}`` interpolation and environment variables give them.
_INT_RE = re.compile(r"^\s*[-+]?\d{1,18}\s*$")
_FLOAT_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d{1,3})?\s*$")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _show(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (Python's int-to-str limit)
        return "a very large number"
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    origin = get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hints_cache.get(cls)
    if hints is None:
        hints = get_type_hints(cls)
        _hints_cache[cls] = hints
    return hints


class _Builder:
    def __init__(self, choice_sets: typing.Mapping[str, typing.Sequence[str]]) -> None:
        self.problems: list[Problem] = []
        self.choice_sets = choice_sets

    def add(self, key: str, problem: str, got: object = None, expected: str = "", show_got: bool = True) -> None:
        self.problems.append(Problem(key, problem, _show(got) if show_got and got is not None else "", expected))

    def build(self, cls: type, data: object, key: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(key, "must be a mapping", data, "a mapping of keys to values")
            return None
        hints = _hints(cls)
        # A field may carry its YAML key (``lambda`` is a keyword in Python: the field is ``lambda_``).
        fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        for raw_name, value in data.items():
            name = str(raw_name)
            sub = f"{key}.{name}" if key else name
            if name not in fields:
                self.add(sub, "unknown key" + did_you_mean(name, fields), None,
                         "one of " + ", ".join(sorted(fields)))
                continue
            f = fields[name]
            ok, converted = self.convert(hints[f.name], value, sub, f.metadata)
            if ok:
                kwargs[f.name] = converted
        for name, f in fields.items():
            if f.name in kwargs:
                continue
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if name not in data:
                    self.add(f"{key}.{name}" if key else name, "is required", None, _type_name(hints[f.name]))
                return None
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # pragma: no cover - defensive: fields are all checked above
            self.add(key, f"invalid section: {exc}")
            return None

    def convert(self, tp: Any, value: Any, key: str, meta: typing.Mapping[str, Any]) -> tuple[bool, Any]:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return True, None
            return self.convert(args[0], value, key, meta)
        if tp is float and key.rsplit(".", 1)[-1] in _DURATION_KEYS:
            try:
                seconds = parse_duration(value)
            except ValueError:
                self.add(key, "not a duration", value, "e.g. 500ms, 15s, 2m, 1h, 7d or a number of seconds")
                return False, None
            return self.bounds(seconds, key, meta)
        if tp is bool:
            if isinstance(value, bool):
                return True, value
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return True, _BOOLS[value.strip().lower()]
            self.add(key, "must be true or false", value, "true or false")
            return False, None
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return self.bounds(value, key, meta)
            if isinstance(value, str) and _INT_RE.match(value):
                return self.bounds(int(value), key, meta)
            self.add(key, "must be an integer", value, "an integer")
            return False, None
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
                return self.bounds(float(value), key, meta)
            if isinstance(value, str) and _FLOAT_RE.match(value):
                return self.bounds(float(value), key, meta)
            self.add(key, "must be a number", value, "a number")
            return False, None
        if tp is str:
            # Scalars only: a YAML !!binary, !!set or a mapping is not text, whatever str() would make of it.
            if isinstance(value, bool) or not isinstance(value, (str, int, float, datetime.date)):
                self.add(key, "must be a string", None if meta.get("secret") else value, "a string")
                return False, None
            text = str(value)
            choices = meta.get("choices")
            if isinstance(choices, str):  # a named set, known from the registries (see Components)
                choices = self.choice_sets.get(choices)
            if choices and text not in choices:
                return self.choice(key, text, choices)
            return True, text
        if tp is Any:
            return True, value
        if origin is Literal:
            allowed = get_args(tp)
            # YAML 1.1 reads a bare `off`/`on` as a boolean: `mode: off` means "off".
            if value is False and "off" in allowed:
                value = "off"
            elif value is True and "on" in allowed:
                value = "on"
            if value in allowed and not isinstance(value, bool):
                return True, value
            return self.choice(key, str(value), tuple(str(a) for a in allowed))
        if origin is list:
            if value is None:
                return True, []
            if not isinstance(value, list):
                self.add(key, "must be a list", value, "a list")
                return False, None
            (item_tp,) = get_args(tp)
            out = []
            ok_all = True
            for i, item in enumerate(value):
                ok, conv = self.convert(item_tp, item, f"{key}[{i}]", meta)
                ok_all &= ok
                out.append(conv)
            return ok_all, out
        if origin is dict:
            if value is None:
                return True, {}
            if not isinstance(value, dict):
                self.add(key, "must be a mapping", None if meta.get("secret") else value, "a mapping")
                return False, None
            _, val_tp = get_args(tp)
            allowed_keys = meta.get("keys")
            out_d: dict[str, Any] = {}
            ok_all = True
            for k, v in value.items():
                sub = f"{key}.{k}"
                if allowed_keys and str(k) not in allowed_keys:
                    self.choice(sub, str(k), allowed_keys, what="unknown key")
                    ok_all = False
                    continue
                if val_tp is str and isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = str(v)
                ok, conv = self.convert(val_tp, v, sub, {k2: v2 for k2, v2 in meta.items() if k2 != "keys"})
                ok_all &= ok
                out_d[str(k)] = conv
            return ok_all, out_d
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            built = self.build(tp, value, key)
            return built is not None, built
        self.add(key, "unsupported value", value)  # pragma: no cover - schema uses only the types above
        return False, None

    def bounds(self, number: float, key: str, meta: typing.Mapping[str, Any]) -> tuple[bool, Any]:
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and number < lo:
            self.add(key, "too small", number, f">= {lo}")
            return False, None
        if hi is not None and number > hi:
            self.add(key, "too large", number, f"<= {hi}")
            return False, None
        return True, number

    def choice(self, key: str, text: str, choices: typing.Sequence[str], what: str = "unknown value") -> tuple[bool, Any]:
        hint = did_you_mean(text, choices)
        # An unknown key is already named by ``key``; an unknown value is shown.
        self.add(key, what + hint, None if what == "unknown key" else text, f"one of {', '.join(choices)}")
        return False, None


#: Keys whose float values are durations.
DURATION_KEYS = _DURATION_KEYS = frozenset({"retention", "timeout", "interval", "max_age", "window", "export_interval",
                            "shutdown_timeout", "poll", "targets_poll", "fallback_after", "group_wait",
                            "repeat_interval", "failure_window", "drop_window", "evaluate_interval",
                            "delivery_deadline", "alarm_period", "startup_grace", "header_timeout", "idle_timeout"})


def build_config(cls: type, data: object,
                 choice_sets: typing.Mapping[str, typing.Sequence[str]] | None = None) -> tuple[Any, list[Problem]]:
    """Build ``cls`` from ``data``; returns ``(instance or None, problems)``.

    ``choice_sets`` names the sets a field's ``choices`` may refer to by name (exporter names,
    probe types, instrumentation names: they come from the registries, above this layer); a
    field whose named set is not given is not checked.
    """
    builder = _Builder(choice_sets or {})
    result = builder.build(cls, data, "")
    return (result if not builder.problems else None), builder.problems
