"""Each package installs alone into a fresh virtual environment and imports without its siblings.

Installs use uv's pip interface (the same resolution as ``pip install ./shared ./packages/X``)
constrained to the versions in uv.lock, so the packages come from uv's cache.
"""

import json
import shutil
import subprocess
import sys

import pytest
from workspace import MEMBERS, PAPER_IMPORTS, ROOT

UV = [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def constraints(tmp_path_factory):
    path = tmp_path_factory.mktemp("lock") / "constraints.txt"
    subprocess.run(
        [*UV, "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-packages", "--no-header", "-o", str(path)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("folder", ["shared", "packages/livr", "packages/internal-rl", "packages/spatia"])
def test_package_installs_alone_and_imports_no_sibling(folder, constraints, tmp_path):
    dist, module, script = MEMBERS[folder]
    venv = tmp_path / "venv"
    subprocess.run([*UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    py = venv / "bin" / "python"
    targets = ["./shared"] if folder == "shared" else ["./shared", f"./{folder}"]
    proc = subprocess.run(
        [*UV, "pip", "install", "--quiet", "--python", str(py), "-c", str(constraints), *targets],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    probe = (
        "import importlib, json, sys, importlib.metadata as md\n"
        f"importlib.import_module({module!r})\n"
        "dists = {d.metadata['Name'] for d in md.distributions()}\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'dists': sorted(dists)}))\n"
    )
    out = json.loads(
        subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True).stdout
    )
    siblings = PAPER_IMPORTS - {module}
    assert not siblings & {m.split(".")[0] for m in out["modules"]}, "a sibling package was imported"
    installed = set(out["dists"])
    assert dist in installed
    assert not {d for f, (d, _, _) in MEMBERS.items() if f not in (folder, "shared")} & installed

    help_out = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0, help_out.stderr
    assert "usage" in help_out.stdout.lower()
