"""One registry type for everything chosen by name: jobs, executors, mitigation methods,
filters, metrics, importers.

A registry maps names to objects of one kind. Registering a name twice is a programming error;
asking for an unknown name is a user error and gets the same one-line message everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from memlake.core.errors import MemlakeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, e.g. `Registry[Method]("mitigation method")`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str, *, named: bool = False) -> Callable[[T], T]:
        """Decorator form of `add`; `named` also sets the item's `name` attribute (a class that
        reports which registered name it is, e.g. in manifests)."""

        def deco(item: T) -> T:
            if named:
                item.name = name  # type: ignore[attr-defined]
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise MemlakeError(
                f"unknown {self.kind} {name!r} (choose from {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
