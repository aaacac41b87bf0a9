"""The command lines generated from settings: flags and twins agree with the Fields, flags win, bad values exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import service.__main__
import service.config
import training.__main__
from service.config import Settings
from training.config import BOUNDS, TrainParams
from training.settings_cli import Switch, add_flags, flags_of, settings_from


class Example(BaseSettings):
    """A settings class with one field of each kind the generator handles."""

    model_config = SettingsConfigDict(env_prefix="EX_", extra="ignore")

    size: int = Field(4, ge=1, le=8, description="how many")
    home: Path = Field(Path("here"), description="a folder")
    mode: Literal["fast", "slow"] = Field("fast", description="how")
    verbose: Switch = Field(False, description="say more")
    cache: bool = Field(True, description="keep things")
    names: list[str] = Field(default_factory=list, description="some names")
    renamed: int = Field(1, validation_alias="EX_OTHER_NAME", description="a twin named otherwise")


FLAGS = flags_of(Example, {"home": "root"})


def parse(argv: list[str]) -> Example:
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, Example, FLAGS)
    return settings_from(Example, parser, parser.parse_args(argv), FLAGS)


def test_each_field_is_a_flag_whose_help_shows_bounds_twin_and_default() -> None:
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, Example, FLAGS)
    helps = {action.option_strings[0]: action.help for action in parser._actions if action.option_strings}
    assert set(helps) == {"-h", "--size", "--root", "--mode", "--verbose", "--no-cache", "--names", "--renamed"}
    assert helps["--size"] == "how many; 1 to 8 (EX_SIZE, default 4)"
    assert helps["--renamed"] == "a twin named otherwise (EX_OTHER_NAME, default 1)"
    assert [flag.env for flag in FLAGS if flag.field == "home"] == ["EX_HOME"]


def test_flags_override_twins_and_twins_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_SIZE", "2")
    monkeypatch.setenv("EX_HOME", "/from/env")
    monkeypatch.setenv("EX_OTHER_NAME", "5")
    monkeypatch.setenv("EX_CACHE", "true")
    got = parse(["--size", "3", "--verbose", "--no-cache", "--names", '["a", "b"]', "--mode", "slow"])
    assert (got.size, got.home, got.verbose, got.cache, got.names, got.mode) == (
        3,
        Path("/from/env"),
        True,
        False,
        ["a", "b"],
        "slow",
    )
    assert got.renamed == 5
    assert parse(["--renamed", "6"]).renamed == 6


@pytest.mark.parametrize(
    ("command", "argv", "env", "message"),
    [
        (parse, ["--size", "9"], {}, "argument --size: Input should be less than or equal to 8, got '9'"),
        (parse, [], {"EX_SIZE": "0"}, "EX_SIZE='0': Input should be greater than or equal to 1"),
        (parse, [], {"EX_VERBOSE": "yes"}, "EX_VERBOSE='yes': expected true, false, 1 or 0"),
        (parse, [], {"EX_OTHER_NAME": "x"}, "EX_OTHER_NAME='x': Input should be a valid integer"),
        (parse, ["--mode", "medium"], {}, "argument --mode: invalid choice: 'medium'"),
        (
            service.__main__.main,
            ["--port", "70000"],
            {},
            "argument --port: Input should be less than or equal to 65535, got '70000'",
        ),
        (
            service.__main__.main,
            [],
            {"LSTM_TORCH_THREADS": "0"},
            "LSTM_TORCH_THREADS='0': Input should be greater than or equal to 1",
        ),
        (
            service.__main__.main,
            [],
            {"LSTM_WORKERS": "0"},
            "LSTM_WORKERS='0': Input should be greater than or equal to 1 or",
        ),
    ],
)
def test_a_bad_flag_or_twin_exits_2_naming_it_and_the_bound(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: Callable[[list[str]], object],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """For a model of this test's and for lstm-serve's Settings alike."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_lstm_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_PORT", "1234")
    monkeypatch.setenv("LSTM_BATCH_MAX_SIZE", "8")
    parser = service.__main__.build_parser()
    flags = service.config.FLAGS
    got = settings_from(
        Settings, parser, parser.parse_args(["--port", "4321", "--store", "/s", "--no-batching"]), flags
    )
    assert (got.port, got.store_dir, got.batching, got.batch_max_size) == (4321, "/s", False, 8)


@pytest.mark.parametrize(
    ("env", "fragment"), [("0", "hidden_size from 1 to 512"), ("600", "hidden_size from 1 to 512")]
)
def test_a_hyper_parameter_twin_out_of_bounds_exits_2_naming_the_bound(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, env: str, fragment: str
) -> None:
    monkeypatch.setenv("LSTM_HIDDEN_SIZE", env)
    assert training.__main__.main(["--store", str(tmp_path), "--no-progress"]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "lstm").exists()


def test_lstm_train_settings_out_of_bounds_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LSTM_TRAIN_TORCH_THREADS", "0")
    with pytest.raises(SystemExit) as exit_info:
        training.__main__.parse_args([])
    assert exit_info.value.code == 2
    assert "LSTM_TRAIN_TORCH_THREADS='0': Input should be greater than or equal to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        training.__main__.parse_args(["--torch-threads", "2", "--memory-budget-mb", "-1"])
    assert "argument --memory-budget-mb: Input should be greater than or equal to 0" in capsys.readouterr().err


def test_lstm_train_hyper_parameter_flags_and_train_params_come_from_the_same_fields() -> None:
    actions = {action.dest: action for action in training.__main__.build_parser()._actions}
    schema = TrainParams.model_json_schema()["properties"]
    for name, bound in BOUNDS.items():
        assert actions[name].option_strings == [f"--{name.replace('_', '-')}"]
        assert actions[name].help == f"{bound.help}; {bound.describe()} (LSTM_{name.upper()})"
        number = next(option for option in schema[name]["anyOf"] if option["type"] != "null")
        assert (number["minimum"], number["maximum"], schema[name]["description"]) == (
            bound.low,
            bound.high,
            bound.help,
        )
    assert TrainParams.model_validate({"seed": 3}).given() == {"seed": 3}
