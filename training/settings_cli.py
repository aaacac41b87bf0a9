"""Command lines generated from pydantic-settings models: one flag per field, its environment twin, its bounds.

A flag's name, type, choices, bounds and help come from the field; its twin is the variable the settings
class itself reads (pydantic-settings: the field's alias, else prefix + name). Flags are handed to the
settings class as init arguments, which pydantic-settings ranks above the environment: a flag overrides
its twin, and os.environ is read by pydantic-settings alone. Used by lstm-train and lstm-serve; it
imports no torch, so the service may import it.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined
from pydantic_settings import BaseSettings

TRUE, FALSE = ("true", "1"), ("false", "0")
S = TypeVar("S", bound=BaseSettings)


def _switch(value: Any) -> Any:
    """A boolean flag's twin: true/1 or false/0 in any case, nothing else (pydantic alone would take yes/on)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise PydanticCustomError("switch", "expected true, false, 1 or 0")


# A boolean setting whose environment twin accepts true/false/1/0 only.
Switch = Annotated[bool, BeforeValidator(_switch)]


@dataclass(frozen=True)
class Flag:
    """One field of a settings class as a command-line flag."""

    field: str  # the settings field
    key: str  # what the settings class takes it as: the alias, else the field name
    dest: str  # argparse's attribute: the flag without dashes, in snake case
    env: str  # the environment twin

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")


def env_name(model: type[BaseSettings], name: str) -> str:
    """The environment variable pydantic-settings reads for field `name` of `model`."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return (str(model.model_config.get("env_prefix", "")) + name).upper()


def flags_of(model: type[BaseSettings], names: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> list[Flag]:
    """A flag per field of `model` but `skip`; `names` renames some flags (field -> dest)."""
    names = names or {}
    found = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = field.validation_alias if isinstance(field.validation_alias, str) else name
        found.append(Flag(name, key, names.get(name, name), env_name(model, name)))
    return found


def default_text(field: FieldInfo) -> str:
    """A field's default as help and docs write it: unset for None or none."""
    default = field.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, list | dict):
        return json.dumps(default)
    return str(default)


def number_text(value: Any) -> str:
    """Integers in full (2147483647, not 2.14748e+09), other numbers short (1e-06)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def bounds_text(field: FieldInfo) -> str:
    """The range the Field declares (ge/gt/le/lt), as text; empty when it declares none."""
    low = high = ""
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = number_text(item.ge)
        elif isinstance(item, annotated_types.Gt):
            low = f"above {number_text(item.gt)}"
        elif isinstance(item, annotated_types.Le):
            high = number_text(item.le)
        elif isinstance(item, annotated_types.Lt):
            high = f"below {number_text(item.lt)}"
    if low and high:
        return f"{low} to {high}"
    if low:
        return f"at least {low}" if not low.startswith("above") else low
    return f"at most {high}" if high and not high.startswith("below") else high


def _choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return None


def _metavar(annotation: Any, dest: str) -> str:
    """INT, FLOAT or PATH for a field of that type (or that type or None), else the flag's own name."""
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)] or [annotation]
    names = {int: "INT", float: "FLOAT", Path: "PATH"}
    if len(kinds) == 1:
        return names.get(kinds[0], dest.upper())
    # A number or a word (lstm-serve's --workers N|auto).
    words = [str(word) for kind in kinds for word in (_choices(kind) or [])]
    numbers = ["N" for kind in kinds if typing.get_origin(kind) is Annotated and typing.get_args(kind)[0] is int]
    return "|".join(numbers + words) if words and numbers else dest.upper()


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) is Annotated and typing.get_args(annotation)[0] is bool)


def _json(text: str) -> Any:
    """A list or dict flag, written as JSON like its twin."""
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON") from None


def add_flags(
    container: argparse._ActionsContainer,
    model: type[BaseSettings],
    flags: Iterable[Flag],
    help_for: Callable[[Flag, FieldInfo], str | None] | None = None,
) -> None:
    """Add `flags` to a parser or group: unset flags stay out of the namespace, so the settings read their twins.

    `help_for(flag, field)` may give a flag's help; by default it is the description, bounds, twin and default.
    """
    for flag in flags:
        field = model.model_fields[flag.field]
        text = help_for(flag, field) if help_for else None
        if text is None:
            bounds = bounds_text(field)
            text = f"{field.description}{'; ' + bounds if bounds else ''} ({flag.env}, default {default_text(field)})"
        text = text.replace("%", "%%")
        if _is_bool(field.annotation):
            negate = field.get_default() is True  # a switch that is on by default is turned off by its flag
            option = "--no-" + flag.option[2:] if negate else flag.option
            action = "store_false" if negate else "store_true"
            container.add_argument(option, dest=flag.dest, action=action, default=argparse.SUPPRESS, help=text)
            continue
        choices = _choices(field.annotation)
        complex_value = typing.get_origin(field.annotation) in (list, dict)
        container.add_argument(
            flag.option,
            dest=flag.dest,
            default=argparse.SUPPRESS,
            choices=choices,
            type=_json if complex_value else str,
            metavar=None if choices else _metavar(field.annotation, flag.dest),
            help=text,
        )


def problems(exc: ValidationError, flags: Iterable[Flag], given: Mapping[str, Any]) -> str:
    """The validation errors as a usage message: per field, the flag or the twin that held the value, and why.

    A field of several types (lstm-serve's workers: a number or auto) fails once per type; one line says all.
    """
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for error in exc.errors():
        by_key.setdefault(str(error["loc"][0]) if error["loc"] else "", []).append(error)
    lines = []
    for key, errors in by_key.items():
        flag = next((flag for flag in flags if key in (flag.key, flag.field)), None)
        # "Value error, " is how pydantic introduces a validator's ValueError; the message says enough.
        message = " or ".join(dict.fromkeys(str(error["msg"]).removeprefix("Value error, ") for error in errors))
        value = errors[0]["input"]
        if flag is None:
            lines.append(message)
        elif flag.key in given:
            lines.append(f"argument {flag.option}: {message}, got {value!r}")
        else:
            lines.append(f"{flag.env}={value!r}: {message}")
    return "; ".join(lines)


def settings_from(
    model: type[S], parser: argparse.ArgumentParser, namespace: argparse.Namespace, flags: Iterable[Flag]
) -> S:
    """The settings: the flags given, over their twins, over the defaults; a bad value is a usage error (exit 2)."""
    flags = list(flags)
    given = {flag.key: getattr(namespace, flag.dest) for flag in flags if hasattr(namespace, flag.dest)}
    try:
        return model(**given)
    except ValidationError as exc:
        parser.error(problems(exc, flags, given))
