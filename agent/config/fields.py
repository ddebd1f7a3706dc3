"""What every part of the configuration schema shares: the duration type and field metadata."""

from __future__ import annotations

from typing import Any

#: A duration in seconds. In YAML: ``500ms``, ``15s``, ``2m``, ``1h``, ``7d`` or a number.
Duration = float


def _c(**meta: Any) -> Any:
    """Field metadata shorthand: ``min``, ``max``, ``secret``, ``choices``, ``key`` (the YAML name)."""
    return meta
