"""The command line's habits: suggestions for typos, help for every option with its default."""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from deconas.cli.parser import build_parser


def _subcommands():
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _run(*args):
    return subprocess.run([sys.executable, "-m", "deconas.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("typed, meant", [("serach", "search"), ("upscael", "upscale"), ("stud", "study"),
                                          ("evla", "eval")])
def test_a_misspelt_subcommand_gets_one_line_with_the_nearest_command(typed, meant):
    r = _run(typed)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"did you mean '{meant}'?")


def test_a_word_like_no_command_gets_no_suggestion():
    r = _run("zzzz")
    assert r.returncode == 2 and "did you mean" not in r.stderr


def test_a_misspelt_choice_of_an_option_is_suggested_too():
    r = _run("upscale", "x.png", "--backend", "tourch")
    assert r.returncode == 2 and r.stderr.strip().endswith("did you mean 'torch'?")


def _exempt(parser, action):
    # flags (their default is off), the help itself, and members of a required either-or group
    if action.nargs == 0 or isinstance(action, argparse._HelpAction) or action.required:
        return True
    return any(action in g._group_actions and g.required for g in parser._mutually_exclusive_groups)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_that_states_its_default(name):
    parser = _subcommands()[name]
    missing = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        text = a.help or ""
        if not text or (a.option_strings and not _exempt(parser, a) and "default" not in text.lower()):
            missing.append("/".join(a.option_strings) or a.dest)
    assert not missing, f"deconas {name}: {missing} lack help or do not state their default"


def _readme_examples():
    """The README's command block (the one that sets DATA): its lines with DATA filled in."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = next(b for b in re.findall(r"```\n(.*?)```", text, re.S) if b.startswith("DATA="))
    lines = block.strip().splitlines()
    data = (root / lines[0].split("=", 1)[1].split("#")[0].strip()).resolve()
    cmds = [shlex.split(ln.split("  #")[0].replace("$DATA", str(data))) for ln in lines[1:]]
    return data, cmds


def test_the_readmes_examples_parse_and_name_folders_that_exist(shared_data):
    data, cmds = _readme_examples()
    assert data == shared_data.resolve()
    assert len(cmds) >= 10
    ap = build_parser()
    for cmd in cmds:
        assert cmd[0] == "deconas"
        ap.parse_args(cmd[1:])  # an unknown option or a bad choice exits here
        for arg in cmd[1:]:
            if arg.startswith(str(data)):
                assert Path(arg).is_dir(), f"{' '.join(cmd)}: {arg} does not exist"
