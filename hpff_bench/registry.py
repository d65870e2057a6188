"""One registry per kind of plug-in (networks, split schemes, aux nets, methods), timm-style.

A registry maps a name to an object and remembers where it came from (the module that
registered it, or the installed distribution whose entry point did), so `hpff-bench networks`
can say so. Third-party packages add their own through an entry-point group declared in their
pyproject.toml, e.g.

    [project.entry-points."hpff_bench.networks"]
    mynet = "mypkg.models:build_mynet"

The entry points of a group are loaded once, the first time the registry is read. Torch-free.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hpff_bench.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    obj: Any
    source: str  # "hpff_bench.networks" (built in), "mypkg.models", "entry point mynet (dist 0.1)"


class Registry(Mapping):
    """name -> object, filled by `@registry.register(name)` and by an entry-point group.

    `adapt(name, loaded)` turns what an entry point loads into the registered object (e.g. a
    network callable into a NetworkSpec); an entry point that loads a module registers through
    that module's own decorators instead."""

    def __init__(self, kind: str, group: str | None = None, adapt: Callable[[str, Any], Any] | None = None):
        self.kind = kind
        self.group = group
        self._adapt = adapt
        self._entries: dict[str, Entry] = {}
        self._loaded = group is None

    def register(self, name: str | None = None, *, source: str | None = None):
        """Decorator: `@NETWORKS.register("mynet")`; the name defaults to the object's __name__."""

        def deco(obj):
            self.add(name or obj.__name__, obj, source or getattr(obj, "__module__", "?"))
            return obj

        return deco

    def add(self, name: str, obj: Any, source: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered (from {self._entries[name].source})")
        self._entries[name] = Entry(obj, source)

    def registered(self) -> tuple[str, ...]:
        """The names registered so far, without reading the entry points (for help texts)."""
        return tuple(self._entries)

    def remove(self, name: str) -> None:
        """Take `name` out (tests that register their own)."""
        del self._entries[name]

    def rescan(self) -> None:
        """Read the entry-point group again on the next access (a package installed since)."""
        self._loaded = self.group is None

    def source(self, name: str) -> str:
        return self._load()[name].source

    def _load(self) -> dict[str, Entry]:
        if not self._loaded:
            self._loaded = True  # first: an entry point's module may read this registry
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.group):
                if ep.name in self._entries:
                    continue  # a package's module already registered it through the decorator
                before = set(self._entries)
                dist = f" ({ep.dist.name} {ep.dist.version})" if getattr(ep, "dist", None) else ""
                source = f"entry point {self.group}:{ep.name} = {ep.value}{dist}"
                try:
                    obj = ep.load()
                except Exception as e:  # noqa: BLE001  (an installed package's code)
                    raise ConfigError(f"{source} does not load ({type(e).__name__}: {e}); fix or "
                                      "uninstall that package") from None
                if inspect.ismodule(obj):  # importing the module registered what it has
                    for name in set(self._entries) - before:
                        self._entries[name] = Entry(self._entries[name].obj, source)
                elif ep.name not in self._entries:
                    self.add(ep.name, self._adapt(ep.name, obj) if self._adapt else obj, source)
        return self._entries

    def __getitem__(self, name: str):
        return self._load()[name].obj

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, name) -> bool:
        return name in self._load()
