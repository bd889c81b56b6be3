"""One small registry mapping YAML names to code.

Registries are flat (one level): ``ENCODERS.get("clip")`` returns the registered object, and any name of the form
``"package.module:attr"`` is imported on demand so users can plug in their own code without registering it.

>>> R = Registry("demo")
>>> @R.register("double")
... def double(x):
...     return 2 * x
>>> R.get("double")(3)
6
>>> R.names()
['double']
>>> R.get("math:sqrt")(9.0)
3.0
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    """A named mapping from string keys to objects (functions, classes)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; used bare as a decorator when ``obj`` is None.

        Raises:
            KeyError: ``name`` is already registered (two pieces of code claiming one YAML name is a bug).
        """

        def _add(item: Any) -> Any:
            if name in self._items and self._items[name] is not item:
                raise KeyError(f"{self.kind} registry: {name!r} is already registered to {self._items[name]!r}")
            self._items[name] = item
            return item

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``, or import ``"pkg.mod:attr"``.

        Raises:
            KeyError: unknown name; the message lists the known names.
        """
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as err:
                raise KeyError(f"{self.kind} registry: cannot import {name!r}: {err}") from err
        raise KeyError(f"{self.kind} registry: unknown name {name!r}; known: {', '.join(self.names()) or '(none)'}")

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, Callable[..., Any] | Any]]:
        """(name, object) pairs in name order."""
        return [(n, self._items[n]) for n in self.names()]


ENCODERS = Registry("encoders")
POOLERS = Registry("poolers")
DATASETS = Registry("datasets")
REWARDS = Registry("rewards")
METRICS = Registry("metrics")
TASKS = Registry("tasks")
"""Evaluation tasks by name (:mod:`affectllm.evaluation.tasks`)."""
