"""The layout, the Makefile, the README and the import rules agree with each other."""

import ast
import re
import subprocess
import sys

import pytest
from workspace import MEMBERS, PAPER_IMPORTS, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REQUIRED_TARGETS = {
    "setup", "test", "test-shared", "test-livr", "test-internal-rl", "test-spatia",
    "train-livr", "train-internal-rl", "train-spatia", "bench", "lint",
}  # fmt: skip


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.M))


def test_top_level_layout():
    for name in (
        "packages",
        "shared",
        "tools",
        "tests",
        "pyproject.toml",
        "uv.lock",
        "Makefile",
        "README.md",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), f"{name} is missing from the repository root"


@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_member_layout(folder):
    dist, module, script = MEMBERS[folder]
    member = ROOT / folder
    meta = tomllib.loads((member / "pyproject.toml").read_text())
    assert meta["project"]["name"] == dist
    assert script in meta["project"]["scripts"]
    assert (member / "src" / module / "__init__.py").is_file()
    assert (member / "tests").is_dir() and list((member / "tests").glob("test_*.py"))
    assert (member / "README.md").is_file()
    deps = " ".join(meta["project"]["dependencies"])
    for other_folder, (other_dist, _, _) in MEMBERS.items():
        if other_folder not in (folder, "shared"):
            assert other_dist not in deps, f"{dist} must not depend on its sibling {other_dist}"
    if folder != "shared":
        assert "latentforge" in [re.split(r"[<>=;\[ ]", d)[0] for d in meta["project"]["dependencies"]]
        assert meta["tool"]["uv"]["sources"]["latentforge"] == {"workspace": True}


def test_workspace_members_cover_every_package():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = meta["tool"]["uv"]["workspace"]["members"]
    assert "shared" in members and "packages/*" in members
    assert {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file()} == {
        "livr", "internal-rl", "spatia",
    }  # fmt: skip


def _imported_top_levels(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_one_way_imports(folder):
    """latentforge imports no paper package; a paper package imports no sibling (tests included)."""
    _, module, _ = MEMBERS[folder]
    forbidden = PAPER_IMPORTS - {module}
    offenders = []
    for path in (ROOT / folder).rglob("*.py"):
        if ".venv" in path.parts:
            continue
        bad = _imported_top_levels(path) & forbidden
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_makefile_has_the_required_targets():
    missing = REQUIRED_TARGETS - makefile_targets()
    assert not missing, f"Makefile lacks targets {sorted(missing)}"


def test_readme_commands_name_existing_targets_and_paths():
    readme = (ROOT / "README.md").read_text()
    # `make train-<paper>` is a pattern, not a target: names followed by a <placeholder> are skipped.
    named = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)(?![a-z0-9<-])", readme))
    assert {"test", "setup"} <= named, "README must show `make setup`/`make test`"
    assert named <= makefile_targets(), f"README names unknown targets {sorted(named - makefile_targets())}"
    for folder in re.findall(r"pip install ((?:\./[\w/.-]+ ?)+)", readme):
        for path in folder.split():
            assert (ROOT / path / "pyproject.toml").is_file(), (
                f"README installs {path}, which is not a package"
            )
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_makefile_dry_run_parses():
    """`make -n` on each required target: the Makefile parses and the recipes expand."""
    for target in sorted(REQUIRED_TARGETS):
        proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"make -n {target} failed:\n{proc.stderr}"
