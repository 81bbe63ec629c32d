"""The command-line reference the docs are built with: written from the parsers, it
names every option of every command with its help, default and range."""

from __future__ import annotations

import argparse

from bloomseg.cli import build_parser
from bloomseg.cli.reference import markdown


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def test_every_option_of_every_command_is_in_the_reference():
    text = markdown()
    commands = list(_commands(build_parser()))
    assert len(commands) > 12
    for name, parser in commands:
        assert f"`bloomseg {name}`" in text, name
        for action in parser._actions:
            for flag in action.option_strings:
                assert f"`{flag}" in text, (name, flag)
    # help with its default and range, as --help gives it
    assert "training tiles per epoch, the images in turn" in text
    assert "an integer in [1, 100] (default: 6)" in text
    assert "(one of: none, norms, encoder, encoder+norms)" in text
