"""What every config field allows, declared next to the field, checked in one place.

A config is a dataclass whose fields declare their allowed values with these helpers:

    latent_dim: int = number(20, min=1)
    lr: float = number(1e-3, above=0)
    objective: str = choice("elbo", "elbo", "iwae")
    hidden_dims: tuple[int, ...] = numbers((400,), min=0)
    time_limit: float = number(0.0, min=0, parse=parse_minutes)

`check_config(cfg)` (run by every config's `__post_init__`, so by the CLI, the Python API
and loading a run alike) rejects a value of the wrong type, a NaN or infinite number, a
number out of its range and an unknown choice with one sentence that names the field, the
value and what is allowed. A subclass that only changes a default keeps its parent's rule.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Callable

from dgm.errors import DgmError


def number(default: Any, *, min: float | None = None, max: float | None = None, above: float | None = None,
           below: float | None = None, parse: Callable[[str], Any] | None = None, described: str = "") -> Any:
    """A finite int or float field: min/max inclusive, above/below exclusive bounds; `parse` reads the
    command line's text (with `described` saying in words what it accepts)."""
    return dataclasses.field(default=default, metadata={"rule": Rule(min=min, max=max, above=above, below=below,
                                                                     parse=parse, described=described)})


def numbers(default: tuple, *, min: float | None = None, max: float | None = None, above: float | None = None,
            below: float | None = None, length: int | None = None, nonempty: bool = False) -> Any:
    """A tuple of numbers, each within the bounds; `length` fixes how many, `nonempty` wants at least one."""
    return dataclasses.field(default=default, metadata={"rule": Rule(min=min, max=max, above=above, below=below,
                                                                     length=length, nonempty=nonempty)})


def choice(default: str, *allowed: str) -> Any:
    """A string field that takes one of `allowed`."""
    return dataclasses.field(default=default, metadata={"rule": Rule(choices=tuple(allowed))})


def text(default: str, pattern: str, allowed: str) -> Any:
    """A string field matching a regular expression; `allowed` says in words what matches."""
    return dataclasses.field(default=default, metadata={"rule": Rule(pattern=pattern, described=allowed)})


def parse_minutes(text: str) -> float:
    """A duration in minutes from '90s', '25m', '1.5h' or a bare number of minutes."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+|nan|inf)\s*(s|sec|m|min|h|hr)?\s*", text.lower())
    if not m:
        raise ValueError(text)
    value = float(m.group(1))
    unit = (m.group(2) or "m")[0]
    return value * {"s": 1 / 60, "m": 1.0, "h": 60.0}[unit]


@dataclasses.dataclass(frozen=True)
class Rule:
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    length: int | None = None
    nonempty: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    described: str = ""
    parse: Callable[[str], Any] | None = None

    def bounds(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.below is not None:
            parts.append(f"< {self.below:g}")
        return " and ".join(parts)

    def number_problem(self, v: float) -> str | None:
        if not math.isfinite(v):
            return "a finite number"
        if ((self.min is not None and v < self.min) or (self.max is not None and v > self.max)
                or (self.above is not None and v <= self.above) or (self.below is not None and v >= self.below)):
            return f"a number {self.bounds()}"
        return None


def rule_of(config_cls: type, name: str) -> Rule | None:
    """The rule of field `name`: declared on the class or, for a default changed in a subclass, on a parent."""
    for cls in config_cls.__mro__:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and "rule" in f.metadata:
            return f.metadata["rule"]
    return None


def _kinds(annotation: Any) -> tuple[list[Any], bool]:
    """(the non-None types of a field's annotation, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def describe(config_cls: type, name: str) -> str:
    """What field `name` allows, in words."""
    hints = typing.get_type_hints(config_cls)
    kinds, optional = _kinds(hints[name])
    rule = rule_of(config_cls, name) or Rule()
    kind = kinds[0]
    if rule.choices:
        what = "one of " + ", ".join(rule.choices)
    elif rule.described:
        what = rule.described
    elif kind is bool:
        what = "true or false"
    elif typing.get_origin(kind) is tuple:
        (elem,) = set(typing.get_args(kind)) - {Ellipsis}
        count = f"{rule.length} " if rule.length else ("one or more " if rule.nonempty else "")
        bound = f" {rule.bounds()}" if rule.bounds() else ""
        what = f"{count}comma-separated {'integers' if elem is int else 'numbers'}{bound}"
    elif kind in (int, float):
        bound = f" {rule.bounds()}" if rule.bounds() else ""
        what = f"{'an integer' if kind is int else 'a number'}{bound}"
    else:
        what = f"a {getattr(kind, '__name__', kind)}"
    return what + (" or none" if optional else "")


def _problem(value: Any, kind: Any, rule: Rule) -> bool:
    """True when `value` breaks the type `kind` or the rule."""
    if kind is bool:
        return not isinstance(value, bool)
    if kind is int:
        return isinstance(value, bool) or not isinstance(value, int) or rule.number_problem(value) is not None
    if kind is float:
        return isinstance(value, bool) or not isinstance(value, (int, float)) or rule.number_problem(value) is not None
    if kind is str:
        if not isinstance(value, str):
            return True
        if rule.choices:
            return value not in rule.choices
        return bool(rule.pattern) and re.fullmatch(rule.pattern, value) is None
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (tuple, list)):
            return True
        (elem,) = set(typing.get_args(kind)) - {Ellipsis}
        if rule.length is not None and len(value) != rule.length or rule.nonempty and not value:
            return True
        return any(_problem(v, elem, rule) for v in value)
    return False


def check_value(config_cls: type, name: str, value: Any) -> Any:
    """`value` for field `name` (ints become floats in float fields), or DgmError saying what is allowed."""
    hints = typing.get_type_hints(config_cls)
    kinds, optional = _kinds(hints[name])
    if value is None and optional:
        return None
    rule = rule_of(config_cls, name) or Rule()
    for kind in kinds:
        if not _problem(value, kind, rule):
            return float(value) if kind is float else value
    shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    raise DgmError(f"invalid value '{shown}' for {name}; it takes {describe(config_cls, name)}")


def check_config(cfg: Any) -> None:
    """Check every field of a config dataclass in place (ints in float fields become floats)."""
    for f in dataclasses.fields(cfg):
        value = check_value(type(cfg), f.name, getattr(cfg, f.name))
        if isinstance(value, list):
            value = tuple(value)
        object.__setattr__(cfg, f.name, value)


def parse_value(config_cls: type, name: str, text: str) -> Any:
    """A command-line string as field `name` takes it (then checked)."""
    hints = typing.get_type_hints(config_cls)
    kinds, optional = _kinds(hints[name])
    rule = rule_of(config_cls, name) or Rule()
    if optional and text.lower() in ("none", "null"):
        return None
    for kind in kinds:
        try:
            value = rule.parse(text) if rule.parse else _parse_as(text, kind)
        except (ValueError, TypeError):
            continue
        try:
            return check_value(config_cls, name, value)
        except DgmError:
            break  # said below with the text as the user wrote it
    raise DgmError(f"invalid value '{text}' for {name}; it takes {describe(config_cls, name)}")


def _parse_as(text: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if hint is str:
        return text
    if origin in (list, tuple):
        (elem,) = set(typing.get_args(hint)) - {Ellipsis} or {str}
        items = [t for t in text.replace("[", "").replace("]", "").split(",") if t.strip()]
        return origin(_parse_as(t.strip(), elem) for t in items)
    raise TypeError(hint)


class Checked:
    """Mixin for config dataclasses: every instance is checked when made (and by dataclasses.replace)."""

    def __post_init__(self) -> None:
        check_config(self)
