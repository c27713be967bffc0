"""Every t2cr command shown in README.md composes (issue 12): the command lines of its code blocks and
inline code, and the examples in the console scripts' docstrings, placeholders filled, composed with the
command's Hydra config (no run); t2cr-tables parsed by its argparse parser."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from t2cr.cli.tables import build_parser
from t2cr.resources import CONF_DIR
from t2cr.sweeps import split_top_level

README = Path(__file__).resolve().parents[1] / "README.md"
CONFIG = {"t2cr-train": "train", "t2cr-eval": "eval", "t2cr-score": "score", "t2cr-explain": "explain",
          "t2cr-prepare": "prepare"}
# placeholders as the README writes them -> values that compose
PLACEHOLDERS = {"<stamp>": "2025-01-01_00-00-00", "<name>": "mtl_aqa", "<dir>": "/tmp/t2cr/dir",
                "<run folder>": "/tmp/t2cr/run", "<sweep_dir>": "/tmp/t2cr/sweep", "<date_time>": "2025-01-01"}


def readme_commands() -> list[str]:
    """Command lines from fenced code blocks (joining backslash continuations) and from inline code spans."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")  # a console transcript's prompt; its output lines are skipped
            if line.split(" ", 1)[0] in (*CONFIG, "t2cr-tables"):
                commands.append(line)
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    commands += [span for span in re.findall(r"`([^`\n]+)`", without_blocks)
                 if span.startswith(tuple(CONFIG) + ("t2cr-tables",)) and " " in span]
    return commands


def fill(command: str) -> list[str]:
    """The command's arguments with placeholders filled; `...` standing for more arguments is dropped."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    args = []
    for arg in shlex.split(command, comments=True)[1:]:
        if arg == "...":
            continue
        key, sep, value = arg.partition("=")
        if sep and value == "...":
            arg = f"{key}=/tmp/t2cr/{key.split('.')[-1]}"  # a path the README leaves to the reader
        args.append(arg)
    return args


def one_job(args: list[str]) -> list[str]:
    """A `-m` sweep composed as its first job: the first value of every comma-separated sweep value."""
    if "-m" not in args and "--multirun" not in args:
        return args
    job = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        key, sep, value = arg.partition("=")
        job.append(f"{key}={split_top_level(value)[0]}" if sep else arg)
    return job


def docstring_examples() -> list[str]:
    """The indented example lines of each console script's module docstring (`t2cr-<name> ...`)."""
    examples = []
    for name in (*CONFIG, "t2cr-tables"):
        doc = importlib.import_module(f"t2cr.cli.{name.removeprefix('t2cr-')}").__doc__ or ""
        examples += [line.strip() for line in doc.splitlines() if line.startswith(f"    {name} ")]
    return examples


COMMANDS = list(dict.fromkeys(readme_commands() + docstring_examples()))


def test_the_readme_shows_every_command():
    shown = {command.split()[0] for command in COMMANDS}
    assert shown == {*CONFIG, "t2cr-tables"}, shown
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_composes(command):
    name, args = command.split()[0], one_job(fill(command))
    if name == "t2cr-tables":
        build_parser().parse_args(args)  # argparse exits (SystemExit 2) on an argument it does not accept
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=CONFIG[name], overrides=args)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    # every interpolation resolves (values the README leaves out, such as a dataset's paths, stay ???)
    OmegaConf.to_container(cfg, resolve=True)
