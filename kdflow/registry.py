"""One tiny registry type for models, losses and data sources: a declared table plus a decorator.

Each registry is declared with its table of names → the module that defines each one, so
the names are known without importing anything (params validate without torch), and `get`
imports only the module of the name asked for (a stage imports only what it runs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from kdflow.errors import KdflowError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps declared names to objects, importing each name's module on first use."""

    def __init__(self, kind: str, modules: Mapping[str, str]) -> None:
        self.kind = kind
        self.modules = dict(modules)  # name -> module that defines and registers it
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that records its target under `name`, as the table declares."""

        def decorator(obj: T) -> T:
            declared = self.modules.get(name)
            defined_in = getattr(obj, "__module__", None)
            # The table is the one list of names: a module may register only what it declares.
            if declared is None:
                raise ValueError(
                    f"{self.kind} {name!r} is not in the registry table; "
                    f"declared: {', '.join(self.names())}"
                )
            if declared != defined_in:
                raise ValueError(
                    f"{self.kind} {name!r} is defined in {defined_in}, "
                    f"but the table declares it in {declared}"
                )
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise KdflowError listing known names."""
        module = self.modules.get(name)
        if module is None:
            raise KdflowError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        importlib.import_module(module)
        if name not in self._items:
            raise KdflowError(f"{module} does not register the {self.kind} {name!r}")
        return self._items[name]

    def import_all(self) -> None:
        """Import every module of the table, registering every name."""
        for module in dict.fromkeys(self.modules.values()):
            importlib.import_module(module)

    def names(self) -> list[str]:
        """Return the declared names in table order, importing nothing."""
        return list(self.modules)

    def __contains__(self, name: object) -> bool:
        return name in self.modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
