"""The kernel benchmark runner: its role layouts and a smoke run that writes both result files."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from latentforge.kernels import Role
from latentforge.kernels.roles import validate_roles

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("kernels_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seq,frac", [(1024, 0.25), (4096, 0.6)])
def test_livr_layouts_are_valid_and_sized(seq, frac):
    bench = load_bench()
    roles = bench.livr_roles(seq, frac, torch.device("cpu"))
    assert roles.shape == (1, seq)
    assert (roles == Role.LATENT).sum() == 16
    assert abs(float((roles == Role.IMAGE).float().mean()) - frac) < 0.01
    validate_roles(roles, 1)  # known values, latents after the image


def test_device_slug():
    assert load_bench().device_slug(torch.device("cpu")) == "cpu"


@pytest.mark.slow
def test_quick_run_writes_json_and_markdown(tmp_path):
    result = load_bench().main(["--out", str(tmp_path), "--quick"])
    data = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert data["attention"] and data["projection"] and data == json.loads(json.dumps(result))
    refs = [r for r in data["attention"] if r["backend"] == "reference"]
    assert all(r["speedup_vs_reference"] == 1.0 for r in refs)
    checked = [
        r for r in data["attention"] if r["backend"] != "causal"
    ]  # causal: the yardstick, another rule
    assert {r["backend"] for r in checked} == {"reference", "flex", "split"}
    assert all(r["fwd_max_abs_err_vs_reference"] < 1e-4 for r in checked)
    split = [r for r in data["attention"] if r["backend"] == "split"]
    assert all(r["ms"] > 0 and r["pct_of_causal_rate"] > 0 for r in split) and len(split) == 8
    assert "## split against the targets" in (tmp_path / "cpu-quick.md").read_text()
    assert all(r["identical_to_reference"] for r in data["projection"])
    assert "| reference |" in (tmp_path / "cpu-quick.md").read_text()
