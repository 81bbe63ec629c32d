"""The ``bloomseg`` command line: a thin layer over the Python API.

Exit codes: 0 all done, 1 failed, 2 bad command line (an unknown option, a value out of
its range, settings that do not fit together), 3 done but some inputs skipped. Every
option's default, range and choices come from the settings dataclasses and constants of
the API, so the command line and Python refuse the same values with the same words.

``predict`` (predict, classify, evaluate, export), ``train`` and ``tools`` (weights, features,
explore, doctor, synthetic, view) each add their commands' parsers and run them.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bloomseg import __version__
from bloomseg.errors import BloomsegError, ConfigError
from bloomseg.settings import Range

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong, naming the option and
    what it accepts, and where the help is (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def add_setting(parser: argparse.ArgumentParser | argparse._ArgumentGroup, owner: type | Callable,
                name: str, text: str, *flags: str, accepted: Range | None = None,
                **kwargs: Any) -> argparse.Action:
    """An option for setting ``name`` of ``owner``: a settings dataclass (the field's
    default and declared :class:`~bloomseg.settings.Range`) or a function (the parameter's
    default; ``accepted`` gives the range).

    Args:
        parser: where to add it.
        owner: the dataclass or function that owns the setting.
        name: the field or parameter.
        text: the help, without the default and the range (added here).
        flags: the option strings (default ``--name-with-dashes`` and ``--name_as_is``).
        accepted: the range where ``owner`` is a function.
        kwargs: more ``add_argument`` arguments (``metavar``, ``choices``...).
    """
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        default, accepted = field.default, accepted or field.metadata.get("range")
    else:
        default = inspect.signature(owner).parameters[name].default
    flags = flags or tuple(dict.fromkeys((f"--{name.replace('_', '-')}", f"--{name}")))
    if accepted is not None:
        kwargs.setdefault("type", accepted)
        text = f"{text}; {accepted.describe()}"
    return parser.add_argument(*flags, dest=name, default=kwargs.pop("default", default),
                               help=f"{text} (default: %(default)s)", **kwargs)


def add_run_flags(parser: argparse.ArgumentParser, overwrite: str = "replace existing outputs"
                  ) -> None:
    """``--overwrite`` and ``-q/--quiet``, which every command that writes takes."""
    parser.add_argument("--overwrite", action="store_true", help=overwrite)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_output(parser: argparse.ArgumentParser, text: str = "output folder",
               *aliases: str, required: bool = True) -> None:
    """``-o/--output``, on every command that writes."""
    parser.add_argument("-o", "--output", *aliases, dest="output", required=required, help=text)


def build_parser() -> Parser:
    """The argument parser of every ``bloomseg`` command."""
    from bloomseg.cli import predict, tools, train

    parser = Parser(prog="bloomseg",
                    description="Blood-smear cell segmentation on DinoBloom features.")
    parser.add_argument("--version", action="version", version=f"bloomseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tools.add_weights(commands)
    tools.add_explore(commands)
    tools.add_features(commands)
    train.add_train(commands)
    train.add_train_classes(commands)
    predict.add_predict(commands)
    predict.add_classify(commands)
    predict.add_evaluate(commands)
    predict.add_export(commands)
    tools.add_doctor(commands)
    tools.add_synthetic(commands)
    tools.add_view(commands)
    return parser


def _as_option(message: str, parser: argparse.ArgumentParser) -> str:
    """A settings error in the command line's words: ``context must ...`` names the
    option ``--context`` where the command has one."""
    known = {s for action in parser._actions for s in action.option_strings}

    def flag(match: re.Match) -> str:
        option = f"--{match.group(1).replace('_', '-')}"
        return option if option in known else match.group(1)

    return re.sub(r"^([a-z_]+)(?= (must|is|of|\d))", flag, message)


def explicit(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The settings (dests) of a command's ``parser`` that ``argv`` gives, a default's
    value given on purpose among them (a preset yields to them, and only to them)."""
    import copy

    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    bare._defaults = {}
    found, _ = bare.parse_known_args(list(argv))
    return set(vars(found))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    # file names that are not UTF-8 are printed with \x escapes rather than crash a run
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was given (see explicit)
    try:
        return args.func(args)
    except ConfigError as e:  # a setting out of its range or not fitting the others
        command = parser._subparsers._group_actions[0].choices[args.command]
        print(f"error: {_as_option(str(e), command)}", file=sys.stderr)
        return EXIT_USAGE
    except BloomsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # the system's own message names the file
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
