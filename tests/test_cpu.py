"""The CPU budget: affinity and cgroup v1/v2 quotas, read from files laid out as the kernel lays them out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_store.cpu import CpuBudget, _cpu_times, cpu_budget, idle_cores, training_threads


def _layout(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


AFFINITY = len(os.sched_getaffinity(0))


def test_no_quota_means_the_affinity_mask(tmp_path: Path) -> None:
    root, proc = _layout(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    budget = cpu_budget(root, proc)
    assert budget.cores == AFFINITY and budget.quota is None and budget.threads == AFFINITY


def test_a_cgroup_v2_quota_caps_the_budget(tmp_path: Path) -> None:
    root, proc = _layout(tmp_path, "0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "50000 100000\n"})
    budget = cpu_budget(root, proc)
    assert budget.cores == 0.5 and budget.threads == 1
    assert budget.source.endswith("kubepods/pod1/c1/cpu.max")


def test_a_quota_on_an_ancestor_cgroup_applies(tmp_path: Path) -> None:
    root, proc = _layout(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {"kubepods/pod1/cpu.max": "150000 100000\n", "kubepods/pod1/c1/cpu.max": "max 100000\n"},
    )
    budget = cpu_budget(root, proc)
    expected = min(1.5, AFFINITY)
    assert budget.cores == expected and budget.threads == int(expected)


def test_a_cgroup_v1_cfs_quota_caps_the_budget(tmp_path: Path) -> None:
    root, proc = _layout(
        tmp_path,
        "4:memory:/x\n1:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
    )
    budget = cpu_budget(root, proc)
    assert budget.cores == 1.0 and budget.threads == 1 and "cfs_quota_us" in budget.source


def test_an_unlimited_v1_quota_is_no_quota(tmp_path: Path) -> None:
    root, proc = _layout(tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cpu_budget(root, proc).quota is None


def test_unreadable_cgroup_files_fall_back_to_the_affinity_mask(tmp_path: Path) -> None:
    budget = cpu_budget(tmp_path / "absent", tmp_path / "absent-proc")
    assert budget.cores == AFFINITY and budget.quota is None


@pytest.mark.skipif(AFFINITY < 2, reason="needs two CPUs to restrict the mask to one")
def test_a_process_pinned_to_one_cpu_has_a_budget_of_one() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from model_store.cpu import cpu_budget; b = cpu_budget(); print(b.cores, b.threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1.0", "1"]


TWO = CpuBudget(cores=2.0, affinity=2, quota=None, source="affinity")


def test_training_uses_the_budgets_cores_only_while_they_are_idle() -> None:
    assert training_threads(TWO, 1.9) == 2
    assert training_threads(TWO, 1.2) == 1  # one core busy: a second thread would wait for it
    assert training_threads(TWO, 0.05) == 1
    assert training_threads(TWO, None) == 1  # /proc/stat unreadable: the safe choice
    one = CpuBudget(cores=1.0, affinity=2, quota=1.0, source="cpu.max")
    assert training_threads(one, 2.0) == 1  # idle cores beyond the quota are not ours


def test_cpu_times_sum_idle_and_iowait_over_our_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 90 0 45 720 45 0 0 0 0 0\nintr 12345\n"
    )
    assert _cpu_times(stat, {0}) == (85, 100)
    assert _cpu_times(stat, {0, 1}) == (85 + 765, 100 + 900)
    assert _cpu_times(stat, {7}) is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc/stat")
def test_idle_cores_sees_one_busy_loop_per_cpu() -> None:
    loops = [
        subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"])
        for _ in range(AFFINITY)
    ]
    try:
        time.sleep(0.5)  # let them start
        idle = idle_cores(1.0)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert idle is not None and idle < 0.75
