"""Checkpoints round-trip exactly and survive a save that dies half-way."""

import random

import numpy as np
import pytest
import torch
from torch import nn

import latentforge.checkpoint as ckpt
from latentforge.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint


class TiedModel(nn.Module):
    """Weights shared between two modules, as in language models with tied embeddings."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3), nn.ReLU())
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.body(self.embed(tokens)))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = TiedModel()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    return model, opt, sched


def _train(model, opt, sched, steps):
    """Steps that draw from every RNG a trainer uses: torch (data + dropout), NumPy, python."""
    trace = []
    for _ in range(steps):
        tokens = torch.randint(0, 10, (4, 5))
        shift = np.random.randint(0, 3) + random.randint(0, 2)
        loss = nn.functional.cross_entropy(model(tokens).flatten(0, 1), ((tokens + shift) % 10).flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        trace.append(loss.item())
    return trace


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=3, extra={"epoch": 1})
    expected = _train(model, opt, sched, 4)
    expected_params = [p.detach().clone() for p in model.parameters()]

    fresh, fresh_opt, fresh_sched = _setup(seed=123)  # different init: everything must come from disk
    random.seed(99)
    np.random.seed(99)
    state = load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert state.step == 3 and state.extra == {"epoch": 1}
    assert fresh.head.weight is fresh.embed.weight  # tying survives loading
    assert _train(fresh, fresh_opt, fresh_sched, 4) == expected
    for a, b in zip(fresh.parameters(), expected_params, strict=True):
        assert torch.equal(a, b)


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, opt, _ = _setup()
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), 2)

    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.pt"):  # after the weights, before the state file
            raise KeyboardInterrupt("killed mid-save")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model=model, optimizer=opt, step=2)
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    restored, restored_opt, _ = _setup(seed=5)
    assert load_checkpoint(tmp_path, model=restored, optimizer=restored_opt).step == 1
    for k, v in restored.state_dict().items():
        assert torch.equal(v, saved[k])

    # The next save clears the half-written folder and moves `latest` on.
    save_checkpoint(tmp_path, model=model, optimizer=opt, step=2)
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model, opt, _ = _setup()
    for step in range(5):
        save_checkpoint(tmp_path, model=model, optimizer=opt, step=step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]


def test_errors_name_the_problem(tmp_path):
    model, opt, _ = _setup()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path, model=model)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, model=model, step=0, extra={"bad": object()})
    assert not tmp_path.joinpath("latest").exists()  # nothing written for a bad call

    path = save_checkpoint(tmp_path, model=model, step=0)
    with pytest.raises(FileNotFoundError, match=r"no optimizer\.pt"):
        load_checkpoint(path, model=model, optimizer=opt)
    (path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json"):
        load_checkpoint(path, model=model)
    path = save_checkpoint(tmp_path, model=model, step=1)
    with pytest.raises(RuntimeError):  # a model of another shape is refused, not half-loaded
        load_checkpoint(path, model=nn.Linear(3, 3))


def test_weights_are_plain_safetensors(tmp_path):
    from safetensors.torch import load_file

    model, _, _ = _setup()
    path = save_checkpoint(tmp_path, model=model, step=0)
    tensors = load_file(str(path / "model.safetensors"))
    assert torch.equal(tensors["body.0.weight"], model.body[0].weight)
