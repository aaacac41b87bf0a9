"""A reader of server-sent events (text/event-stream) over lines, as the HTML standard parses them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One dispatched event: its `event:` name ("message" when none) and its joined `data:` lines."""

    name: str
    data: str


def events(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines; comments (keep-alives) and unknown fields are skipped."""
    name = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(name or "message", "\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
