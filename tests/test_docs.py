"""The docs say what the code does: every setting with its default, the two commands, the client snippet."""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import json
import re
from pathlib import Path

import service.__main__
import service.config
import training.__main__
from service.config import Settings
from training.config import BOUNDS, PRESETS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`LSTM_{name.upper()}`" not in readme]
    assert missing == []


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == ["make serve", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_operations_names_only_tests_that_exist() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    named = set(re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", text))
    assert len(named) > 30
    missing = [f"{path}::{test}" for path, test in sorted(named) if f"def {test}(" not in (ROOT / path).read_text()]
    assert missing == []


def shown_default(name: str) -> str:
    """A setting's default as the README table writes it: `value`, or unset for None."""
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if isinstance(default, list | dict):
        return f"`{json.dumps(default)}`"
    return f"`{default}`"


def settings_table() -> dict[str, str]:
    """The README's settings table: variable -> its default cell."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Settings") :]
    section = section[: section.index("\n#", 1)]
    rows = re.findall(r"^\| `LSTM_(\w+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    assert len(rows) > 20
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a setting has two rows"
    return {name.lower(): default.strip() for name, default in rows}


def test_readme_settings_table_is_the_settings_class_with_its_defaults() -> None:
    table = settings_table()
    assert sorted(set(table) - set(Settings.model_fields)) == [], "rows for settings that do not exist"
    assert sorted(set(Settings.model_fields) - set(table)) == [], "settings without a row"
    wrong = {
        f"LSTM_{name.upper()}": (table[name], shown_default(name))
        for name in Settings.model_fields
        if table[name] != shown_default(name)
    }
    assert wrong == {}, "(the table says, the code says)"


def test_every_setting_but_the_token_is_an_lstm_serve_flag_with_its_variable_as_twin() -> None:
    flags = {flag.field: (flag.option, flag.env) for flag in service.config.FLAGS}
    assert sorted(set(Settings.model_fields) - set(flags)) == ["api_token"]
    assert flags["store_dir"] == ("--store", "LSTM_STORE_DIR")
    assert all(env == f"LSTM_{name.upper()}" for name, (_, env) in flags.items())
    options = {option for action in service.__main__.build_parser()._actions for option in action.option_strings}
    assert {"--store", "--host", "--port", "--workers", "--torch-threads", "--no-batching"} <= options


def test_training_flag_table_is_generated_from_the_fields() -> None:
    # The table of docs/training.md, from its header to the blank line after it; regenerate it with flag_table().
    doc = (ROOT / "docs" / "training.md").read_text()
    start = doc.index("| flag | twin | default | meaning |")
    table = doc[start : doc.index("\n\n", start) + 1]
    assert table == training.__main__.flag_table()
    for name, bound in BOUNDS.items():
        assert f"| `--{name.replace('_', '-')}` | `LSTM_{name.upper()}` |" in table
        assert f"; {bound.describe()} |" in table


def test_a_default_written_in_prose_is_the_code_default() -> None:
    # "`LSTM_DRAIN_TIMEOUT` (30 s)", "`LSTM_MAX_BODY_BYTES` (16 MiB)", "(default 5 s)" in any doc.
    unit = {"s": 1.0, "MiB": 1024 * 1024, "KiB": 1024}
    pattern = re.compile(r"`LSTM_(\w+)`,? \((?:default )?([0-9.]+) ?(s|MiB|KiB)\)")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name, number, suffix in pattern.findall(path.read_text()):
            field = name.lower()
            assert field in Settings.model_fields, f"{path.name} names LSTM_{name}, which is no setting"
            default = Settings.model_fields[field].get_default(call_default_factory=True)
            found.append((path.name, name, float(number) * unit[suffix], default))
    assert len(found) >= 4
    assert [entry for entry in found if entry[2] != entry[3]] == []


def test_deploy_docs_name_only_settings_that_exist() -> None:
    # The container's own variables (LSTM_BAKED_STORE) are read by its entrypoint and set in the Dockerfile.
    container = set(re.findall(r"LSTM_(\w+)", (ROOT / "docker" / "entrypoint.sh").read_text()))
    known = {name.upper() for name in Settings.model_fields} | container
    for name in ("docs/deploy.md", "deploy.env.example", "compose.yaml", "Dockerfile"):
        named = set(re.findall(r"LSTM_([A-Z0-9_]+)", (ROOT / name).read_text()))
        assert sorted(named - known) == [], name


def python_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("```python\n") + len("```python\n") :].split("```", 1)[0]


def test_readme_client_snippet_calls_only_what_the_client_has_and_honours_promoted() -> None:
    tree = ast.parse(python_snippet())
    # Follow the snippet's own import, so that the check moves with the client if it moves.
    (source,) = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module != "numpy"]
    client_class = importlib.import_module(str(source.module)).Client
    job_class = inspect.signature(client_class.train).return_annotation  # Job, or "Job" (postponed annotations)
    if isinstance(job_class, str):
        job_class = getattr(importlib.import_module(client_class.__module__), job_class)
    kinds = {"client": client_class, "job": job_class}
    calls = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if isinstance(node.func.value, ast.Name) and (owner := kinds.get(node.func.value.id)) is not None:
            method = getattr(owner, node.func.attr)  # AttributeError: the snippet calls what does not exist
            inspect.signature(method).bind(None, *node.args, **{k.arg: k.value for k in node.keywords if k.arg})
            calls += 1
    assert calls >= 4
    # A job that declined to promote its version (promoted: False) must not be promoted by the snippet.
    promote_args = [
        ast.unparse(node.args[1])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "promote"
    ]
    assert "result['version']" not in promote_args  # the job promotes by itself when it should
    assert 'result["promoted"]' in python_snippet()


def test_the_presets_wall_clock_limit_is_the_one_the_docs_name() -> None:
    (limit,) = {config.time_limit for config in PRESETS.values()}  # the docs speak of one limit for both
    files = ("docs/deploy.md", "Dockerfile", "README.md", "docs/training.md")
    named = [
        (name, float(s)) for name in files for s in re.findall(r"(\d+) s wall-clock limit", (ROOT / name).read_text())
    ]
    assert len(named) >= 2 and all(seconds == limit for _, seconds in named), named
