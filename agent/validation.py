"""The whole validation of a configuration: the typed build plus every component's own rules.

``pulsetrace.config`` knows the shape of the configuration; which exporter names, probe types
and instrumentation names exist is known to their registries, and some rules belong to the
component that uses the value (a probe type's URL rules, CloudWatch's namespace rules, the
X-Ray rules file's syntax). This module, above all of them, hands that knowledge down, so a
probe type or exporter added to its registry is accepted by the configuration with no list
to keep in step. The runtime and the CLI load configurations through here.

Raises :class:`~pulsetrace.config.problems.ConfigError` with every problem, never anything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import overload

from pulsetrace.config import load as _load
from pulsetrace.config.load import Components
from pulsetrace.config.problems import ConfigError, Problem
from pulsetrace.config.schema import Config

__all__ = ["components", "config_from_mapping", "load_config"]


def _probe_checks(cfg: Config) -> list[Problem]:
    from pulsetrace.healthchecks.validate import probe_problems

    problems: list[Problem] = []
    for i, probe in enumerate(cfg.health.probes):
        problems.extend(probe_problems(f"health.probes[{i}]", probe))
    return problems


def _cloudwatch_checks(cfg: Config) -> list[Problem]:
    from pulsetrace.metrics.datum import config_problems

    return config_problems(cfg)


def _xray_rules_checks(cfg: Config) -> list[Problem]:
    if not cfg.tracing.sampling.xray_rules_file:
        return []
    from pulsetrace.tracing.xray_rules import load_xray_rules  # a bad rules file stops the start: say so now

    try:
        load_xray_rules(cfg.tracing.sampling.xray_rules_file)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def _xray_remote_checks(cfg: Config) -> list[Problem]:
    if not cfg.tracing.sampling.xray_remote.endpoint:
        return []  # without importing the poller (and the SDK under it): start-up, pulsetrace run's supervisor
    from pulsetrace.tracing.xray_remote_poller import config_problems

    return config_problems(cfg)


def _alerts_checks(cfg: Config) -> list[Problem]:
    if not (cfg.alerts.channels or cfg.alerts.routes or cfg.alerts.silences):
        return []
    from pulsetrace.alerts.channels import channel_problems
    from pulsetrace.alerts.routing import config_problems

    problems = [Problem(key, problem, got, expected) for key, problem, got, expected in config_problems(cfg.alerts)]
    for i, channel in enumerate(cfg.alerts.channels):
        problems.extend(Problem(key, problem, expected=expected)
                        for key, problem, expected in channel_problems(f"alerts.channels[{i}]", channel))
    return problems


class _InstrumentationNames(Sequence[str]):
    """The instrumentation names, looked up only when a configuration names one.

    Knowing them means reading every installed distribution's entry points: most
    configurations name none, and start-up (both processes of ``pulsetrace run``) skips it.
    """

    def __init__(self) -> None:
        self._names: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._names is None:
            from pulsetrace.instrumentation.auto import instrumentation_names

            self._names = instrumentation_names()
        return self._names

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()


def components() -> Components:
    """The registered names and the components' checks, as they are now."""
    from pulsetrace.alerts.channels import CHANNELS
    from pulsetrace.exporters import EXPORTERS
    from pulsetrace.healthchecks.registry import probe_types

    return Components(
        choice_sets={"exporter": tuple(EXPORTERS), "probe_type": probe_types(),
                     "instrumentation": _InstrumentationNames(), "alert_channel": tuple(CHANNELS)},
        checks=(_probe_checks, _cloudwatch_checks, _xray_rules_checks, _xray_remote_checks, _alerts_checks),
    )


def config_from_mapping(data: object, env: Mapping[str, str] | None = None, source: str = "") -> Config:
    """Validate a parsed document completely; raises :class:`ConfigError` with every problem."""
    return _load.config_from_mapping(data, env, source, components=components())


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find, load and completely validate the configuration (``--config``, ``$PULSETRACE_CONFIG``, ``./pulsetrace.yaml``)."""
    return _load.load_config(path, env, components=components())
