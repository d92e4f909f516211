"""Every package's console script answers --help and reports its environment."""

import subprocess

import pytest
from workspace import MEMBERS, ROOT

PAPER_FOLDERS = [f for f in MEMBERS if f.startswith("packages/")]


@pytest.mark.parametrize("folder", PAPER_FOLDERS)
def test_cli_info(folder):
    dist, _, script = MEMBERS[folder]
    exe = ROOT / ".venv" / "bin" / script
    out = subprocess.run([str(exe), "info"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].startswith(dist + " ")
    assert "torch" in out
    bad = subprocess.run([str(exe), "no-such-command"], capture_output=True, text=True)
    assert bad.returncode != 0


@pytest.mark.parametrize("folder", PAPER_FOLDERS)
def test_make_train_target_runs_the_package_reproduce_command(folder):
    # `make train-<paper>` is the user's one entry point: it must reach this package's `reproduce`
    # subcommand, and that subcommand must exist and offer the paper-scale config.
    _, _, script = MEMBERS[folder]
    dry = subprocess.run(
        ["make", "-n", f"train-{script}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f"{script} reproduce" in dry
    exe = ROOT / ".venv" / "bin" / script
    out = subprocess.run([str(exe), "reproduce", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--config" in out
