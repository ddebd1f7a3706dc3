"""What touches user code: auto-instrumentation, the business spans API, enrichers, PII scrubbing.

The business API is re-exported here and loaded on first use, so that importing
``pulsetrace.instrumentation`` (which the agent's bootstrap does early) costs nothing::

    from pulsetrace.instrumentation import business_operation, business_span, set_business_attributes, record_outcome
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.instrumentation.business import business_operation, business_span, record_outcome, set_business_attributes

__all__ = ["business_operation", "business_span", "record_outcome", "set_business_attributes"]

_LAZY = {name: "pulsetrace.instrumentation.business" for name in __all__}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pulsetrace.instrumentation' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
