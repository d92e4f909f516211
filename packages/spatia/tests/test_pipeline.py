"""SpatiaPipeline: clip loop and frame counts, save/load round trip, memory switch, 3D editing, generate outputs."""

from __future__ import annotations

import json

import pytest
import torch

from spatia.config import tiny_config
from spatia.data.procedural import intrinsics_from_fov, orbit_trajectory, random_scene, render
from spatia.networks import build_networks
from spatia.pipeline import MemoryEdit, SpatiaPipeline, clip_schedule, tiny_tokenizer
from spatia.tiny import ByteTokenizer
from spatia.trajectories import preset_trajectory

H = W = 32


@pytest.fixture(scope="module")
def pipe() -> SpatiaPipeline:
    torch.set_num_threads(1)
    data = tiny_config().data
    return SpatiaPipeline.from_networks(
        build_networks(tiny_config().model),
        tokenizer=tiny_tokenizer(),
        first_clip_frames=data.first_clip_frames,
        history_frames=data.history_frames,
        new_frames=data.new_frames,
    )


@pytest.fixture(scope="module")
def scene():
    gen = torch.Generator().manual_seed(5)
    room = random_scene(gen)
    w2c = preset_trajectory("orbit", 13, start_w2c=orbit_trajectory(room, 1, gen)[0], angle_degrees=20.0)
    k = intrinsics_from_fov(H, W)
    return render(room, k, w2c, H, W)


def _run(pipe, scene, **kw):
    args = dict(
        depth=scene.depth[0],
        update_memory=False,
        num_inference_steps=1,
        guidance_scale=1.0,
        memory_voxel_size=0.02,
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
    )
    args.update(kw)
    return pipe("a room", scene.images[0], scene.extrinsics_w2c, scene.intrinsics[0], **args)


def test_clip_schedule_splits_first_clip_then_new_frames():
    assert clip_schedule(17, 9, 4) == [(0, 9), (9, 13), (13, 17)]
    with pytest.raises(ValueError, match="9 \\+ k \\* 4"):
        clip_schedule(15, 9, 4)


def test_tiny_tokenizer_gives_the_training_tokenizer_ids():
    fast, ref = tiny_tokenizer(), ByteTokenizer()
    for text in ["a camera moves", "héllo ✓", "x" * 40]:
        out = fast([text], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        ids, mask = ref([text], 16)
        assert torch.equal(out.input_ids, ids) and torch.equal(out.attention_mask, mask)


def test_generation_loop_frame_counts_references_and_memory(pipe, scene):
    out = _run(pipe, scene, num_reference_frames=2)
    assert out.frames.shape == (13, 3, H, W)
    assert torch.equal(out.frames[0], scene.images[0])  # the initial image is frame 0
    assert [(c.start, c.stop) for c in out.clips] == [(0, 9), (9, 13)]
    assert out.clips[0].render.shape == (9, 3, H, W)  # first clip: image + 8 new frames
    assert out.clips[1].render.shape == (9, 3, H, W)  # later clip: 5 history + 4 new
    assert out.clips[0].reference_ids == []  # nothing earlier to retrieve yet
    assert out.clips[1].reference_ids == [0]  # without SLAM updates only the initial keyframe exists
    assert (~out.clips[0].holes[0]).float().mean() > 0.9  # frame 0's own points cover its view
    assert out.frames.min() >= 0 and out.frames.max() <= 1 and torch.isfinite(out.frames).all()


def test_memory_off_gives_an_empty_render_and_no_references(pipe, scene):
    out = _run(pipe, scene, use_memory=False, num_reference_frames=7)
    assert out.memory is None
    assert all(c.holes.all() and c.reference_ids == [] for c in out.clips)
    with_memory = _run(pipe, scene)
    assert not torch.equal(out.frames[1:], with_memory.frames[1:])  # the control input matters


def test_editing_changes_the_memory_before_the_next_clip(pipe, scene):
    plain = _run(pipe, scene)
    assert (~plain.clips[1].holes).any()
    removed = _run(pipe, scene, edits={1: [MemoryEdit("remove", (-50, -50, -50), (50, 50, 50))]})
    assert not (~removed.clips[0].holes).all()  # clip 0 rendered before the edit
    assert removed.clips[1].holes.all() and len(removed.memory) == 0
    # Insert a red box right in front of the clip's cameras: its colour must appear in the render.
    c2w = torch.linalg.inv(scene.extrinsics_w2c[11].double())
    centre = (c2w[:3, :3] @ torch.tensor([0.0, 0.0, 0.6], dtype=torch.float64) + c2w[:3, 3]).tolist()
    box = MemoryEdit(
        "insert", tuple(c - 0.15 for c in centre), tuple(c + 0.15 for c in centre), (1.0, 0.0, 0.0)
    )
    inserted = _run(pipe, scene, edits={1: [box]})
    red = (inserted.clips[1].render[:, 0] > 0.99) & (inserted.clips[1].render[:, 1:].amax(1) < 0.01)
    red_before = (plain.clips[1].render[:, 0] > 0.99) & (plain.clips[1].render[:, 1:].amax(1) < 0.01)
    assert red[-2].float().mean() > 0.2 and red_before[-2].float().mean() < 0.01


def test_save_load_round_trip_gives_identical_outputs(pipe, scene, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = SpatiaPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.first_clip_frames == 9 and loaded.config.text_length == pipe.config.text_length
    a = _run(pipe, scene, num_inference_steps=2)
    b = _run(loaded, scene, num_inference_steps=2)
    assert torch.equal(a.frames, b.frames)
    c = _run(loaded, scene, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a.frames, c.frames)


def test_from_pretrained_rejects_a_foreign_folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ValueError, match="not a SpatiaPipeline"):
        SpatiaPipeline.from_pretrained(tmp_path)


def test_missing_depth_is_a_clear_error(pipe, scene):
    with pytest.raises(ValueError, match="depth"):
        _run(pipe, scene, depth=None)


def test_generate_writes_a_readable_mp4_point_cloud_and_camera_files(tmp_path):
    from spatia.data.realestate10k import parse_camera_file
    from spatia.generate import GenerateConfig, generate
    from spatia.video import read_mp4

    cfg = GenerateConfig(
        num_clips=2,
        num_inference_steps=1,
        guidance_scale=1.0,
        update_memory=False,
        remove_box=["-50,-50,-50,50,50,50"],
        out=str(tmp_path / "gen"),
    )
    paths = generate(cfg)
    video = read_mp4(paths["video"])
    assert video.shape == (13, H * cfg.video_scale, W * cfg.video_scale, 3)
    assert video.std() > 0
    track = parse_camera_file(paths["camera_path_requested"])
    assert len(track) == 13
    est = json.loads((tmp_path / "gen" / "camera_path_estimated.json").read_text())
    assert len(est["extrinsics_w2c"]) == 13 and est["registered"][0] is True
    header = (tmp_path / "gen" / "memory" / "points.ply").read_bytes()[:3]
    assert header == b"ply"
    summary = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert summary["num_frames"] == 13 and summary["clips"][1]["holes"] == 1.0  # removed before clip 1
    assert (tmp_path / "gen" / "contact_sheet.png").stat().st_size > 0


def test_box_arguments_are_validated():
    from spatia.generate import parse_box

    edit = parse_box("0,0,0,1,1,1,0,1,0", with_color=True)
    assert edit.kind == "insert" and edit.color == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="expected 6"):
        parse_box("0,0,0,1,1", with_color=False)
    with pytest.raises(ValueError, match="lo"):
        parse_box("1,0,0,0,1,1", with_color=False)
