"""Name-based registries (one object per kind: methods, backbones, eval sets), in the manner of timm."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from bench.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories), each with a one-line description."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        if name in self._items:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        doc = description or (obj.__doc__ or "").strip().splitlines()[0:1]
        self._items[name] = obj
        self._docs[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")

    def extended(self, items: dict[str, tuple[T, str]]) -> "Registry[T]":
        """A new registry holding this one's entries plus ``items`` (name -> (object, description)); this one is
        left as it is (a run's own eval sets are such a copy, never a change to the shared registry)."""
        out: Registry[T] = Registry(self.kind)
        out._items, out._docs = dict(self._items), dict(self._docs)
        for name, (obj, doc) in items.items():
            out.add(name, obj, doc)
        return out

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UsageError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(self._items))})"

    def describe(self, name: str) -> str:
        return self._docs[name]

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._items)
        return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]

    def expand(self, patterns: list[str]) -> list[str]:
        """Names matching each pattern (exact names or wildcards), in order, without repeats."""
        out: list[str] = []
        for p in patterns:
            hits = self.names(p) if any(c in p for c in "*?[") else [p]
            if not hits:
                raise UsageError(f"no {self.kind} matches {p!r} (available: {', '.join(self.names())})")
            for h in hits:
                self.get(h)
                if h not in out:
                    out.append(h)
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
