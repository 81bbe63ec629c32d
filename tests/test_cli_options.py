"""Every numeric option of every command: an out-of-range value exits 2 with one line
that names the option and what it accepts, before anything runs; settings that do not
fit together do the same."""

from __future__ import annotations

import argparse

import pytest

from bloomseg.cli import EXIT_USAGE, build_parser, main
from bloomseg.settings import Range


def base_arguments(tmp_path) -> dict[str, list[str]]:
    """The least each command needs to get past its required arguments."""
    out, data = str(tmp_path / "out"), str(tmp_path / "no-data")
    return {"predict": ["predict", "default", str(tmp_path / "x.png"), "-o", out],
            "evaluate": ["evaluate", "default", "--data", data, "-o", out],
            "train": ["train", "--data", data, "-o", out],
            "train-classes": ["train-classes", "--data", data, "-o", out],
            "classify": ["classify", str(tmp_path / "x.png"), "--labels", data, "-o", out],
            "features": ["features", str(tmp_path / "x.png"), "-o", out],
            "explore": ["explore", "--data", data, "-o", out],
            "synthetic": ["synthetic", "-o", out],
            "export": ["export", "default", "-o", out],
            "weights": ["weights", "list"], "doctor": ["doctor"]}


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, its parser) for every command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from commands(sub, prefix + (name,))


def numeric_options():
    found = []
    for words, parser in commands(build_parser()):
        for action in parser._actions:
            if action.option_strings and (isinstance(action.type, Range)
                                          or action.type in (int, float)):
                found.append((words, action))
    return found


def test_every_numeric_option_declares_its_range():
    options = numeric_options()
    assert len(options) >= 40  # predict, evaluate, train, features, explore, synthetic
    unchecked = [f"{' '.join(w)} {a.option_strings[0]}" for w, a in options
                 if not isinstance(a.type, Range)]
    assert unchecked == []


@pytest.mark.parametrize("words, action", numeric_options(),
                         ids=lambda v: v.option_strings[0] if isinstance(v, argparse.Action)
                         else " ".join(v))
def test_out_of_range_values_exit_2_with_one_line(words, action, tmp_path, capsys):
    accepted = action.type
    tried = accepted.outside() + (["1.5"] if accepted.kind is int else ["nan"]) + ["x"]
    assert tried
    for value in tried:
        argv = base_arguments(tmp_path)[words[0]] + [action.option_strings[0], str(value)]
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == EXIT_USAGE, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert any(s in lines[0] for s in action.option_strings), lines[0]
        assert accepted.describe() in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("extra, option, words", [
    (["--context", "8"], "--context", "at most 7 patches"),
    (["--halo", "2048"], "--halo", "under the block"),
    (["--block", "1000"], "--block", "multiple of 256"),
])
def test_predict_settings_that_do_not_fit_exit_2(extra, option, words, tmp_path, capsys):
    code = main(base_arguments(tmp_path)["predict"] + extra)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(lines) == 1 and option in lines[0] and words in lines[0]


def test_workers_zero_is_refused_not_run_in_process(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(base_arguments(tmp_path)["predict"] + ["--workers", "0"])
    assert stop.value.code == EXIT_USAGE
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("command, extra, option", [
    ("train", ["--tile", "100"], "--tile"),
    ("train", ["--backbone", "unet", "--head", "fusion"], "own head"),
    ("features", ["--tile", "100"], "--tile"),
])
def test_other_commands_settings_that_do_not_fit_exit_2(command, extra, option, tmp_path, capsys):
    assert main(base_arguments(tmp_path)[command] + extra) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], lines
