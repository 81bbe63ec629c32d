"""The command-line reference, written from the parsers themselves (the docs build it
with ``docs/gen_reference.py``), so that it cannot drift from ``--help``."""

from __future__ import annotations

import argparse

from bloomseg.cli import build_parser


def _cell(text: str) -> str:
    """Text fit for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _flags(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = "" if action.nargs == 0 else f" {formatter._format_args(action, action.dest.upper())}"
    return ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)


def command_markdown(name: str, parser: argparse.ArgumentParser, summary: str = "",
                     level: int = 2) -> str:
    """One command's section: what it does, its usage, and a table of its options per
    group, each option's help with its default and range as ``--help`` gives them (a
    command of commands, such as ``weights``, gives a section to each of its own)."""
    formatter = parser._get_formatter()
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines = [f"{'#' * level} `bloomseg {name}`", "", _cell(parser.description or summary), "",
             "```text", usage, "```", ""]
    nested = []
    for group in parser._action_groups:
        nested += [a for a in group._group_actions if isinstance(a, argparse._SubParsersAction)]
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS
                   and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        lines += [f"{'#' * (level + 1)} {name}: {group.title}", "", "| option | what it does |",
                  "| --- | --- |"]
        for action in actions:
            text = formatter._expand_help(action) if action.help else ""
            if action.choices and not isinstance(action.choices, dict):
                text += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| {_flags(action, formatter)} | {_cell(text)} |")
        lines.append("")
    for action in nested:
        helps = {a.dest: a.help for a in action._choices_actions}
        lines += [command_markdown(f"{name} {sub}", p, helps.get(sub) or "", level + 1)
                  for sub, p in action.choices.items()]
    return "\n".join(lines)


def markdown() -> str:
    """The whole command-line reference: every command of ``bloomseg``, in the order
    ``bloomseg --help`` lists them."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0]
    helps = {a.dest: a.help for a in commands._choices_actions}
    lines = ["# Command-line reference", "",
             "Written from the parsers at build time: every option, with its default and "
             "range, as `bloomseg COMMAND --help` gives it.", "",
             "| command | what it does |", "| --- | --- |"]
    lines += [f"| [`{name}`](#bloomseg-{name}) | {_cell(helps.get(name) or '')} |"
              for name in commands.choices]
    lines.append("")
    for name, sub in commands.choices.items():
        lines += [command_markdown(name, sub, helps.get(name) or ""), ""]
    return "\n".join(lines)
