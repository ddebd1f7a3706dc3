"""Run a function right after a module is first imported (a post-import hook on ``sys.meta_path``).

:class:`PostImportFinder` wraps the loader of each watched module so that, once the
module has executed, its hook runs with the module. The module's own loader is put back
on the module (resources, reload and pkgutil keep working). A hook that cannot run yet
because what it needs is itself still being imported (an instrumentor package that
imports the library it instruments) is deferred: it runs at the next import that passes
through the finder, once that module has finished.

Hooks run on the importing thread, inside the import: they must be quick, must never
raise (the caller wraps them) and must never import the watched module again.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["PostImportFinder", "initializing"]

Hook = Callable[[ModuleType], None]


def initializing(module_name: str) -> bool:
    """True while ``module_name`` is being imported (it is in ``sys.modules`` but not finished)."""
    module = sys.modules.get(module_name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    return bool(getattr(spec, "_initializing", False))


class _HookLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, hook: Hook) -> None:
        self._wrapped = wrapped
        self._hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        # The module's own loader stays the real one (resources, reload, pkgutil).
        module.__loader__ = self._wrapped
        if module.__spec__ is not None:
            module.__spec__.loader = self._wrapped
        self._hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a hook right after a watched module is first imported."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        #: (module that must finish importing first, the call to make then)
        self._deferred: list[tuple[str, Callable[[], None]]] = []
        self._busy = threading.local()

    def defer(self, waiting_for: str, call: Callable[[], None]) -> None:
        """Make ``call`` once the module ``waiting_for`` has finished importing."""
        self._deferred.append((waiting_for, call))

    def _run_deferred(self) -> None:
        ready = [item for item in self._deferred if not initializing(item[0])]
        if not ready:
            return
        self._deferred = [item for item in self._deferred if item not in ready]
        for _, call in ready:
            call()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if self._deferred:
            self._run_deferred()
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        busy: set[str] = getattr(self._busy, "names", None) or set()
        if fullname in busy:
            return None
        busy.add(fullname)
        self._busy.names = busy
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookLoader(spec.loader, hook)
        return spec
