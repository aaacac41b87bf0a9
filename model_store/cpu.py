"""The CPU budget of this process: the cores it may really use (affinity and cgroup quota), not the machine's.

It lives in model_store because that is the one package both `training` and `service` import; it
imports nothing of ours. In a container with a 1-CPU limit `os.cpu_count()` still reports every core
of the node, and a thread per reported core spin-waits for partners that the quota deschedules.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuBudget:
    """How many cores this process may use, and what limits it."""

    cores: float  # may be fractional under a cgroup quota (e.g. 1.5)
    affinity: int  # CPUs in the scheduler affinity mask
    quota: float | None  # cgroup CPU quota in cores; None: no quota
    source: str  # "affinity" or the cgroup file that set the quota

    @property
    def threads(self) -> int:
        """Threads that fit the budget without throttling: whole cores, at least one."""
        return max(1, math.floor(self.cores))

    def describe(self) -> str:
        quota = "no cgroup quota" if self.quota is None else f"cgroup quota {self.quota:g} cores ({self.source})"
        return f"{self.cores:g} cores: affinity {self.affinity} CPUs, {quota}"


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> cgroup path from /proc/self/cgroup; the v2 line is keyed ''."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _ancestors(base: Path, path: str) -> list[Path]:
    """base/path and each of its parents up to base: a quota set on any ancestor applies."""
    folder = base / path.lstrip("/")
    found = [folder]
    while folder != base and base in folder.parents:
        folder = folder.parent
        found.append(folder)
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(root: Path, path: str) -> tuple[float, str] | None:
    best: tuple[float, str] | None = None
    for folder in _ancestors(root, path):
        text = _read(folder / "cpu.max")
        if text is None:
            continue
        limit, _, period = text.partition(" ")
        if limit == "max" or not period:
            continue
        cores = int(limit) / int(period)
        if best is None or cores < best[0]:
            best = (cores, str(folder / "cpu.max"))
    return best


def _v1_quota(root: Path, path: str) -> tuple[float, str] | None:
    best: tuple[float, str] | None = None
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        if not base.is_dir():
            continue
        for folder in _ancestors(base, path):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota is None or period is None or int(quota) <= 0 or int(period) <= 0:
                continue
            cores = int(quota) / int(period)
            if best is None or cores < best[0]:
                best = (cores, str(folder / "cpu.cfs_quota_us"))
        break
    return best


def cpu_budget(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> CpuBudget:
    """The cores this process may use: the smaller of its affinity mask and its cgroup (v2 or v1) CPU quota."""
    affinity = _affinity()
    paths = _cgroup_paths(proc_cgroup)
    quota: tuple[float, str] | None = None
    if "" in paths:
        quota = _v2_quota(cgroup_root, paths[""])
    if quota is None and "cpu" in paths:
        quota = _v1_quota(cgroup_root, paths["cpu"])
    if quota is None or quota[0] >= affinity:
        return CpuBudget(float(affinity), affinity, None if quota is None else quota[0], "affinity")
    return CpuBudget(quota[0], affinity, quota[0], quota[1])


def _cpu_times(proc_stat: Path, cpus: set[int]) -> tuple[int, int] | None:
    """(idle, total) jiffies summed over `cpus` from /proc/stat; None where it cannot be read."""
    try:
        lines = proc_stat.read_text().splitlines()
    except OSError:
        return None
    idle = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        fields = [int(value) for value in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        idle += fields[3] + fields[4]
        total += sum(fields)
    return (idle, total) if total else None


def idle_cores(seconds: float = 0.25, proc_stat: Path = PROC_STAT) -> float | None:
    """How many of this process's CPUs sat idle over the next `seconds`; None where /proc/stat is unreadable."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    before = _cpu_times(proc_stat, cpus)
    time.sleep(seconds)
    after = _cpu_times(proc_stat, cpus)
    if before is None or after is None or after[1] <= before[1]:
        return None
    return len(cpus) * (after[0] - before[0]) / (after[1] - before[1])


def training_threads(budget: CpuBudget, idle: float | None) -> int:
    """Torch threads for a training run: the budget's whole cores when they are idle, else one.

    A second thread trains the default model about 1.3x faster on an idle machine, but beside other
    work its OpenMP threads spin-wait for partners the scheduler has descheduled (4.2x slower beside
    one busy loop per core, against 1.7x with one thread: docs/benchmarks.md, training under contention).
    """
    if idle is None:
        return 1
    return max(1, min(budget.threads, math.floor(idle + 0.25)))
