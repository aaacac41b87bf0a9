"""The workers of one lstm-serve as peers: this worker's place, which worker owns a sequence, where each one listens."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from service.sequence_types import SequenceId

# sun_path of struct sockaddr_un holds 108 bytes, the terminating NUL included (Linux, unix(7)).
MAX_SOCKET_PATH = 107


def owner_of(model: str, sequence_id: SequenceId, count: int) -> int:
    """The index of the worker (of `count`) that holds the state of `sequence_id` of `model`.

    A stable hash, the same in every process and every run (Python's hash() of a str is salted per process):
    blake2b of the JSON of the pair, which keeps the integer 7 and the string "7" apart, as the sequence table
    does. Every version of a model shares the owner: the id is what the client names."""
    digest = hashlib.blake2b(orjson.dumps([model, sequence_id]), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Peers:
    """Where one worker stands among the `count` workers of an lstm-serve, and the private folder of their sockets.

    Made by the supervisor (service/__main__.py) and pickled to each worker in its WorkerSpec; `starts` counts the
    processes that have held this place before this one (0: the first), so a restarted worker can say that it
    lost the sequences its predecessor held."""

    index: int
    count: int
    directory: Path  # created by lstm-serve for this run, mode 0700: only this user reaches the sockets
    starts: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker index {self.index} is not in 0..{self.count - 1}")

    def socket_path(self, index: int) -> Path:
        """Where worker `index` listens for the steps the other workers forward to it."""
        return self.directory / f"worker-{index}.sock"

    def owner(self, model: str, sequence_id: SequenceId) -> int:
        return owner_of(model, sequence_id, self.count)

    def at(self, index: int, starts: int = 0) -> Peers:
        """The same peers seen from worker `index`, the `starts`-th process in that place."""
        return replace(self, index=index, starts=starts)


def check_directory(directory: Path, count: int) -> None:
    """ValueError unless every worker's socket path fits in a Unix socket address."""
    longest = Peers(count - 1, count, directory).socket_path(count - 1)
    if len(str(longest).encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the peer socket path {longest} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket address holds; "
            "set TMPDIR to a shorter folder"
        )
