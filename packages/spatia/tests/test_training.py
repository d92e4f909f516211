"""Flow-matching inputs, the two training stages, loss going down, and exact resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from spatia.conditioning import FrameLayout
from spatia.config import tiny_config
from spatia.flow_matching import NUM_TRAIN_TIMESTEPS, flow_matching_loss, make_training_inputs
from spatia.tiny import tiny_spatia_transformer
from spatia.trainer import EncodedBatch, configure_stage, train, training_loss

LAYOUT = FrameLayout(num_reference=1, num_history=1, num_target=2)


def _batch(seed: int = 0) -> EncodedBatch:
    g = torch.Generator().manual_seed(seed)
    return EncodedBatch(
        latents=torch.randn(2, 4, LAYOUT.num_frames, 4, 4, generator=g),
        control=torch.randn(2, 8, LAYOUT.num_frames, 4, 4, generator=g),
        text=torch.randn(2, 6, 16, generator=g),
        layout=LAYOUT,
    )


def test_training_inputs_noise_targets_keep_references_clean_and_history_light():
    batch = _batch()
    torch.manual_seed(7)  # not _batch's seed: the noise must differ from the latents
    inputs = make_training_inputs(batch.latents, LAYOUT, (1, 2, 2), shift=5.0, history_noise_max=50.0)
    x = batch.latents
    assert torch.equal(inputs.latents[:, :, 0], x[:, :, 0])  # reference: untouched
    hist_change = (inputs.latents[:, :, 1] - x[:, :, 1]).abs().max()
    target_change = (inputs.latents[:, :, 2:] - x[:, :, 2:]).abs().max()
    assert 0 < hist_change < 0.2 < target_change  # sigma_hist <= 0.05 against |noise - x| of a few units
    tokens_per_frame = 2 * 2
    assert inputs.timesteps.shape == (2, LAYOUT.num_frames * tokens_per_frame)
    assert torch.all(inputs.timesteps[:, : 2 * tokens_per_frame] == 0)  # clean context: timestep 0
    target_t = inputs.timesteps[:, 2 * tokens_per_frame :]
    assert torch.all(target_t > 0) and torch.all(target_t <= NUM_TRAIN_TIMESTEPS)
    assert inputs.loss_mask.flatten(1).tolist() == [[0, 0, 1, 1]] * 2
    # Velocity target and a perfect prediction give zero loss; context frames never count.
    assert flow_matching_loss(inputs.target, inputs) == 0
    off_target = inputs.target.clone()
    off_target[:, :, :2] += 100
    assert flow_matching_loss(off_target, inputs) == 0


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    after = model.state_dict()
    return {k for k, v in after.items() if k not in before or not torch.equal(before[k], v)}


def _one_step(model, params, lr=1e-2):
    optimizer = torch.optim.AdamW(params, lr=lr)
    loss = training_loss(model, _batch(), tiny_config())
    loss.backward()
    optimizer.step()


def test_stage1_changes_only_control_weights():
    model = tiny_spatia_transformer()
    params = configure_stage(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(model, params)
    changed = _changed(before, model)
    control = set(model.control_state_dict())
    assert changed and changed <= control
    assert any(k.startswith("vace_blocks.1.") for k in changed)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in control)


def test_stage0_changes_only_main_weights_and_its_export_seeds_the_control_blocks(tmp_path):
    from spatia.models import SpatiaTransformer3DModel
    from spatia.trainer import export_pretrained

    model = tiny_spatia_transformer()
    params = configure_stage(model, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(model, params)
    changed = _changed(before, model)
    assert changed and not changed & set(model.control_state_dict())
    assert any(k.startswith("blocks.3.") for k in changed) and "proj_out.weight" in changed
    path = export_pretrained(model, tmp_path, stage=0)
    loaded = SpatiaTransformer3DModel.from_pretrained(path)
    for block, layer in zip(loaded.vace_blocks, loaded.config.vace_layers, strict=True):
        torch.testing.assert_close(block.ffn.net[2].weight, model.blocks[layer].ffn.net[2].weight)
        assert torch.count_nonzero(block.proj_out.weight) == 0  # still silent until stage 1 trains it


def test_stage2_changes_only_lora_weights_of_main_blocks():
    model = tiny_spatia_transformer()
    for block in model.vace_blocks:  # a "trained" stage-1 branch, so the test sees it stay frozen
        torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    batch = _batch()
    t = torch.full((2,), 400.0)
    with torch.no_grad():
        reference = model(batch.latents, t, batch.text, control_hidden_states=batch.control).sample
    params = configure_stage(model, 2, lora_rank=4, lora_alpha=4)
    with torch.no_grad():  # LoRA starts as a no-op
        torch.testing.assert_close(
            model(batch.latents, t, batch.text, control_hidden_states=batch.control).sample, reference
        )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(model, params)
    changed = _changed(before, model)
    assert changed and all("lora_" in k and k.startswith("blocks.") for k in changed)
    lora_keys = [k for k in model.state_dict() if "lora_" in k]
    assert not any(k.startswith("vace_blocks.") for k in lora_keys)
    assert any(".ffn." in k for k in lora_keys) and any(".attn2." in k for k in lora_keys)


def test_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_spatia_transformer()
    params = configure_stage(model, 1)
    batch, config = _batch(), tiny_config()

    def fixed_loss() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(1234)  # the same noise and noise levels every time
        with torch.no_grad():
            value = training_loss(model, batch, config).item()
        torch.set_rng_state(state)
        return value

    optimizer = torch.optim.AdamW(params, lr=3e-3)
    start = fixed_loss()
    torch.manual_seed(0)
    for _ in range(25):
        state = torch.get_rng_state()
        torch.manual_seed(1234)
        loss = training_loss(model, batch, config)
        torch.set_rng_state(state)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert fixed_loss() < 0.8 * start


@pytest.fixture(scope="module")
def resume_config():
    config = tiny_config()
    return replace(
        config,
        iterations=4,
        checkpoint_every=2,
        batch_size=1,
        data=replace(config.data, num_scenes=1, num_reference_frames=1, first_clip_probability=0.5),
    )


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, resume_config):
    full = train(replace(resume_config, runs_root=str(tmp_path / "a")))
    part = train(replace(resume_config, iterations=2, runs_root=str(tmp_path / "b")))
    resumed = train(replace(resume_config, resume=str(part)))
    assert resumed == part
    a = load_file(str(full / "checkpoints" / "step-00000004" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (full / "export" / "transformer" / "config.json").is_file()
    assert (full / "export" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "losses/flow_matching" in lines[-1]
    assert any(p.name.startswith("events.out.tfevents") for p in full.iterdir())


def test_stage2_starts_from_the_stage1_export_and_exports_a_loadable_lora(tmp_path, resume_config):
    from spatia.models import SpatiaTransformer3DModel

    quick = replace(resume_config, iterations=1, data=replace(resume_config.data, num_reference_frames=0))
    stage1 = train(replace(quick, runs_root=str(tmp_path / "s1"), learning_rate=1e-2))
    export1 = stage1 / "export" / "transformer"
    stage2 = train(
        replace(
            quick, stage=2, stage1_checkpoint=str(export1), learning_rate=1e-2, runs_root=str(tmp_path / "s2")
        )
    )
    trained1 = SpatiaTransformer3DModel.from_pretrained(export1)
    assert any(
        torch.count_nonzero(b.proj_out.weight) > 0 for b in trained1.vace_blocks
    )  # stage 1 trained them
    weights2 = load_file(str(stage2 / "checkpoints" / "step-00000001" / "model.safetensors"))
    for key, value in trained1.control_state_dict().items():
        assert torch.equal(weights2[key], value), key  # stage 2 kept the control branch frozen
    lora_files = list((stage2 / "export" / "lora").glob("*.safetensors"))
    assert len(lora_files) == 1
    assert all(
        k.startswith("transformer.blocks.") for k in load_file(str(lora_files[0]))
    )  # Wan pipeline format
    batch, t = _batch(), torch.full((2,), 500.0)
    with torch.no_grad():
        before = trained1(batch.latents, t, batch.text, control_hidden_states=batch.control).sample
        trained1.load_lora_adapter(
            str(stage2 / "export" / "lora"), weight_name="pytorch_lora_weights.safetensors"
        )
        after = trained1(batch.latents, t, batch.text, control_hidden_states=batch.control).sample
    assert not torch.allclose(before, after)  # the exported adapter carries the stage-2 update
