"""Config fields that declare their valid range where they declare their default, and the one check that enforces
every declared range (a one-line UsageError naming ``section.key``, the range and the bad value).

    @dataclass(frozen=True)
    class MyConfig(Options):  # register("mymethod") sets its section: errors name mymethod.<key>
        lr: float = option(1e-3, gt=0)
        mode: str = option("fast", one_of=("fast", "exact"))

Cross-field rules go in ``check`` (called after the ranges). The checks run in ``__post_init__``, i.e. when the
runner builds the config from the run's options, before any training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from bench.errors import UsageError


@dataclass(frozen=True)
class Range:
    """Valid values of one field: bounds (closed by default, ``gt``/``lt`` open), or a set of choices; ``also``
    are extra accepted values outside the range (e.g. 0 = "take the run's value"). A float must be finite (nan and
    inf are refused) unless ``also`` lists it: ``also=(math.inf,)`` is how an option says inf means something."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    one_of: tuple[Any, ...] = ()
    also: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the range ("must be ..., got ..."), or None."""
        if value in self.also:
            return None
        if self.one_of:
            return None if value in self.one_of else f"{value!r} is not one of {', '.join(map(str, self.one_of))}"
        # written as "not inside" so that NaN, which compares False with everything, is refused
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if ok and isinstance(value, float) and not math.isfinite(value):  # inf passes "> 0"; nan passes no bounds
            bounds = self.describe()
            return f"must be {'' if bounds == 'anything' else bounds + ' and '}finite, got {value}"
        return None if ok else f"must be {self.describe()}, got {value}"

    def describe(self) -> str:
        lo = (self.ge, "[") if self.ge is not None else (self.gt, "(") if self.gt is not None else None
        hi = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        if lo and hi:
            text = f"in {lo[1]}{lo[0]}, {hi[0]}{hi[1]}"
        elif lo:
            text = f"{'>=' if lo[1] == '[' else '>'} {lo[0]}"
        else:
            text = f"{'<=' if hi[1] == ']' else '<'} {hi[0]}" if hi else "anything"
        return " or ".join([*map(str, self.also), text])


def option(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, one_of: tuple[Any, ...] = (), also: tuple[Any, ...] = ()) -> Any:
    """A dataclass field with a default and its declared valid range (see ``Range``)."""
    return field(default=default, metadata={"range": Range(ge, gt, le, lt, tuple(one_of), tuple(also))})


def check_values(cls: type, section: str, values: Mapping[str, Any]) -> None:
    """Check ``values`` (field name -> value) against the ranges ``cls`` declares; the first bad one raises."""
    ranges = {f.name: f.metadata.get("range") for f in dataclasses.fields(cls)}
    for name, value in values.items():
        rng = ranges.get(name)
        why = rng.problem(value) if rng is not None else None
        if why is not None:
            raise UsageError(f"{section}.{name} {why}")


@dataclass(frozen=True)
class Options:
    """Base of a method's config: declared ranges are checked on construction (see the module docstring)."""

    # no annotation: not a field, and not a key of the run's config (bench.config reads the type hints); a method's
    # config gets its registered name from register()
    section = "options"
    #: fields added after checkpoints were cached and runs saved: at its default such a field is left out of the
    #: config's JSON (``key_fields``), so every cache key and saved config made before it stays the same (no
    #: annotation, as ``section``)
    key_optional = ()

    def __post_init__(self) -> None:
        check_values(type(self), self.section, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.check()

    def check(self) -> None:
        """Cross-field rules (one-line UsageError); the declared ranges have been checked already."""

    def key_fields(self) -> dict[str, object]:
        """The config as JSON sees it (``bench.utils.to_jsonable``: cache keys, saved run configs): every field, less
        the ``key_optional`` ones at their defaults, so a config that does not use the newer fields keeps its old
        checkpoint keys and a run made before they existed can still be resumed, reported and compared."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for f in dataclasses.fields(self):
            if f.name in self.key_optional and out[f.name] == f.default:
                del out[f.name]
        return out
