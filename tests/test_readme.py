"""The README's `distill` commands work as pasted (after `make` and `source .venv/bin/activate`).

Commands that would train are composed only (`--cfg job`: every group, option and key they name
exists and the overrides parse); a sweep line is composed for its first setting, since Hydra takes
no `--cfg` with `-m`. `--help` and the bad-config example run for real and must print what the
README says they print.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()
DISTILL = Path(sys.executable).with_name("distill")  # the console script `make` installs


def distill_commands(markdown: str) -> list[list[str]]:
    """The argument lists of the `distill ...` lines in the markdown's bash blocks (`<...>`
    placeholders filled in, comments and leading `VAR=value` assignments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        for line in block.splitlines():
            tokens = shlex.split(re.sub(r"<[^>]+>", "placeholder", line), comments=True)
            while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
                tokens.pop(0)
            if tokens and Path(tokens[0]).name == "distill":
                commands.append(tokens[1:])
    return commands


def first_setting(args: list[str]) -> list[str]:
    """A sweep line as one run: `-m` dropped, each `key=a,b,c` at its first value."""
    if "-m" not in args:
        return args
    single = []
    for arg in args:
        if arg == "-m":
            continue
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith(("[", "{", "'", '"')):
            arg = f"{key}={value.split(',')[0]}"
        single.append(arg)
    return single


def run_distill(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_LOG_DIR": str(tmp_path / "logs"), "DISTILL_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([str(DISTILL), *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False)


COMMANDS = []
for _args in distill_commands(README) + distill_commands(GETTING_STARTED):
    if _args != ["--help"] and _args not in COMMANDS:
        COMMANDS.append(_args)


def test_the_readme_names_its_commands_and_how_to_reach_them_after_make():
    assert ["--help"] in distill_commands(README)
    assert len(COMMANDS) >= 15 and ["experiment=quickstart"] in COMMANDS
    # make installs into .venv and exports DISTILL_DATA_DIR for its own targets only.
    setup = README.split("After `make`", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "source .venv/bin/activate" in setup and "export DISTILL_DATA_DIR=" in setup


def test_help_runs(tmp_path):
    assert DISTILL.exists(), "the `distill` console script is not installed next to the interpreter"
    result = run_distill(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: distill" in result.stdout and "-v, --verbose" in result.stdout


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(args)[:80] for args in COMMANDS])
def test_each_command_composes(args, tmp_path):
    result = run_distill([*first_setting(args), "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seed:" in result.stdout  # the composed run config was printed


def test_the_bad_config_example_prints_what_the_readme_shows(tmp_path):
    block = README.split("Bad input stops before training", 1)[1].split("```", 2)[1]
    command, *expected = [line for line in block.splitlines() if line.strip()]
    assert command.startswith("$ distill ")
    result = run_distill(shlex.split(command)[2:], tmp_path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for line in expected:
        assert line.removeprefix("... ").strip() in output, f"the README shows {line!r}; the run printed:\n{output}"
