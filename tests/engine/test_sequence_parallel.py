"""Sequence parallelism on the CPU: two gloo ranks on loopback give the single-device edit (docs/design.md §6).

The ranks are forked from the test process (the tiny model is already imported there, so they start in a
fraction of a second) and run diffusers' Ulysses layout with KV-Lock's processors: α = 0 (the model's own
attention), 0 < α < 1 (fused K/V on each rank's shard) and α = 1 (foreground-only passes, padded per rank).
The layout maths is also checked on its own, without processes.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.errors import InvalidRequest, SettingsError
from kvlock.execution.acceleration import Acceleration
from kvlock.execution.sequence_parallel import foreground_shards, join_sequence_parallel, shard_bounds
from kvlock.families.cogvideox import CogVideoXFamily
from kvlock.families.wan import WanFamily
from kvlock.lock.token_mask import build_token_mask
from kvlock.world.tiny_families import build_tiny_wan22_a14b, build_tiny_wan22_ti2v

from ..support.clips import box_matte, make_clip

WORLD = 2
# 5 frames at 32×64: 2 latent frames of 2×4 tokens, one latent frame per rank; the matte grows as it moves,
# so the ranks hold different numbers of foreground tokens and the foreground-only pass is padded
FRAMES, HEIGHT, WIDTH = 5, 32, 64
CASES = {
    "plain α=0": EditSettings(steps=3, seed=3, method="fixed_alpha=0"),
    "fused α=0.5": EditSettings(steps=3, seed=3, method="fixed_alpha=0.5"),
    "foreground-only α=1": EditSettings(steps=3, seed=3, method="fixed_alpha=1"),
    "own source pass for the uncond pass": EditSettings(steps=2, seed=4, method="fixed_alpha=1", uncond_source="own"),
}
PROMPT = "a red cube"


def clip() -> tuple[np.ndarray, np.ndarray]:
    frames = make_clip(FRAMES, HEIGHT, WIDTH, seed=6)
    matte = box_matte(FRAMES, HEIGHT, WIDTH, 6, 4, 14, 14, drift=6)
    return frames, matte


def request(settings: EditSettings) -> EditRequest:
    frames, matte = clip()
    return EditRequest(frames, matte, PROMPT, settings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, path: str) -> None:
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        editor = Editor.from_pretrained("tiny-random", acceleration=Acceleration(parallel="ulysses"))
        out: dict = {"execution": editor.execution}
        for name, settings in CASES.items():
            result = editor.edit(request(settings))
            out[name] = (result.frames, result.latents[0], [s.mode for s in result.trace.windows[0].steps])
        uneven = EditSettings(steps=1, height=48, width=48)  # 9 frames: 3 latent frames of 3×3 tokens, 27 in all
        try:
            editor.edit(EditRequest(make_clip(9, 48, 48), box_matte(9, 48, 48, 8, 8, 16, 16), PROMPT, uneven))
        except InvalidRequest as error:
            out["uneven"] = str(error)
        else:
            out["uneven"] = "no error"
        if rank == 0:
            torch.save(out, path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def parallel(tmp_path_factory) -> dict:
    path = str(tmp_path_factory.mktemp("ranks") / "rank0.pt")
    ranks = mp.start_processes(_rank, args=(_free_port(), path), nprocs=WORLD, start_method="fork", join=False)
    deadline = time.monotonic() + 600
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the ranks did not finish within 10 minutes")
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def single(editor) -> dict:
    out = {}
    for name, settings in CASES.items():
        result = editor.edit(request(settings))
        out[name] = (result.frames, result.latents[0], [s.mode for s in result.trace.windows[0].steps])
    return out


# Wan2.2: the two experts of A14B on one mesh, and TI2V's per-token timesteps cut to each rank's tokens. A 64×64
# clip gives A14B 2 latent frames of 4×4 tokens and TI2V (16× VAE) 2 of 2×2: even shares either way.
WAN22 = {"wan22-a14b": build_tiny_wan22_a14b, "wan22-ti2v": build_tiny_wan22_ti2v}
WAN22_CASES = {
    "fused α=0.5": EditSettings(steps=4, seed=3, method="fixed_alpha=0.5", height=64, width=64),
    "foreground-only α=1": EditSettings(steps=4, seed=3, method="fixed_alpha=1", height=64, width=64),
}


def wan22_request(settings: EditSettings) -> EditRequest:
    return EditRequest(make_clip(5, 64, 64, seed=6), box_matte(5, 64, 64, 8, 8, 24, 20, drift=6), PROMPT, settings)


def _wan22_rank(rank: int, port: int, path: str, folders: dict[str, str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        out = {}
        for model, folder in folders.items():
            editor = Editor.from_pretrained(folder, acceleration=Acceleration(parallel="ulysses"))
            for name, settings in WAN22_CASES.items():
                result = editor.edit(wan22_request(settings))
                steps = result.trace.windows[0].steps
                out[model, name] = (result.frames, result.latents[0], [(s.mode, s.expert) for s in steps])
        if rank == 0:
            torch.save(out, path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def wan22_folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("wan22")
    for name, build in WAN22.items():
        build().save_pretrained(root / name)
    return {name: str(root / name) for name in WAN22}


def test_wan22_edits_across_ranks_equal_the_single_device_edits(tmp_path, wan22_folders):
    path = str(tmp_path / "rank0.pt")
    ranks = mp.start_processes(
        _wan22_rank, args=(_free_port(), path, wan22_folders), nprocs=WORLD, start_method="fork", join=False
    )
    deadline = time.monotonic() + 600
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the ranks did not finish within 10 minutes")
    parallel = torch.load(path, weights_only=False)
    for model, folder in wan22_folders.items():
        editor = Editor.from_pretrained(folder)
        for name, settings in WAN22_CASES.items():
            result = editor.edit(wan22_request(settings))
            frames_n, latents_n, steps_n = parallel[model, name]
            assert steps_n == [(s.mode, s.expert) for s in result.trace.windows[0].steps], (model, name)
            torch.testing.assert_close(latents_n, result.latents[0], rtol=1e-4, atol=1e-4)
            assert np.abs(frames_n.astype(np.int16) - result.frames.astype(np.int16)).max() <= 1
    assert {expert for _, expert in parallel["wan22-a14b", "fused α=0.5"][2]} == {0, 1}  # both experts ran


def test_the_clip_gives_the_ranks_different_foreground_counts(editor):
    _, matte = clip()
    masks = build_token_mask(torch.from_numpy(matte), editor.model.compression)
    shards = foreground_shards(masks.flat, WORLD)
    assert masks.flat.numel() == 16 and shards is not None
    assert len(set(shards.own)) == WORLD and min(shards.own) > 0  # padding is exercised on one rank


@pytest.mark.parametrize("name", list(CASES))
def test_parallel_edit_equals_the_single_device_edit(parallel, single, name):
    frames_1, latents_1, modes_1 = single[name]
    frames_n, latents_n, modes_n = parallel[name]
    assert modes_n == modes_1
    expected = {"plain": "off", "fused": "fuse", "foreground-only": "foreground", "own": "foreground"}
    assert set(modes_n) == {expected[name.split()[0]]}
    torch.testing.assert_close(latents_n, latents_1, rtol=1e-4, atol=1e-4)
    assert np.abs(frames_n.astype(np.int16) - frames_1.astype(np.int16)).max() <= 1


@pytest.mark.parametrize("name", list(CASES))
def test_parallel_background_is_bit_exact_outside_the_feathered_matte(parallel, name):
    frames, matte = clip()
    outside = np.stack([feather_matte(m, EditSettings().feather) for m in matte]) == 0
    edited = parallel[name][0]
    assert outside.any() and edited.shape == frames.shape and edited.dtype == frames.dtype
    assert np.array_equal(edited[outside], frames[outside])
    assert not np.array_equal(edited[~outside], frames[~outside])


def test_the_trace_says_how_the_edit_ran(parallel):
    assert parallel["execution"]["parallel"] == "ulysses sequence parallel over 2 ranks (this is rank 0)"


def test_a_gloo_group_refuses_a_window_it_cannot_share_equally_with_a_reason(parallel):
    assert "27 tokens" in parallel["uneven"] and "multiple of 2" in parallel["uneven"]


# -- the layout on its own ----------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "world"), [(16, 2), (45, 2), (32760, 8), (75601, 8), (7, 4)])
def test_shards_are_cut_as_tensor_split_cuts_them(total, world):
    expected = [(int(part[0]), int(part[-1]) + 1) for part in torch.arange(total).tensor_split(world)]
    assert shard_bounds(total, world) == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_foreground_blocks_stay_in_their_shard_and_cover_every_foreground_token_once(seed, world):
    generator = torch.Generator().manual_seed(seed)
    total = int(torch.randint(world, 200, (1,), generator=generator))
    flat = torch.rand(total, generator=generator) < float(torch.rand(1, generator=generator))
    shards = foreground_shards(flat, world)
    if shards is None:
        assert not flat.any() or max(flat[a:b].sum() for a, b in shard_bounds(total, world)) > min(
            b - a for a, b in shard_bounds(total, world)
        )
        return
    blocks = shards.tokens.tensor_split(world)
    assert len({len(b) for b in blocks}) == 1
    real = []
    for (start, stop), block, own in zip(shard_bounds(total, world), blocks, shards.own, strict=True):
        assert ((block >= start) & (block < stop)).all()  # rotary rows and K/V stay on the rank
        assert flat[block[:own]].all() and not flat[block[own:]].any()  # foreground first, then background
        assert len(set(block.tolist())) == len(block)
        real.extend(block[:own].tolist())
    assert sorted(real) == flat.nonzero().squeeze(1).tolist()


def test_no_foreground_layout_when_a_full_shard_sits_beside_a_shorter_one():
    flat = torch.zeros(5, dtype=torch.bool)
    flat[:3] = True  # shards of 3 and 2 tokens: the first is all foreground, the second cannot pad to 3
    assert foreground_shards(flat, 2) is None
    flat[2] = False
    assert foreground_shards(flat, 2) is not None


def test_parallel_settings_are_checked_before_loading():
    with pytest.raises(SettingsError, match="parallel must be one of"):
        Acceleration(parallel="tensor").validated()
    with pytest.raises(SettingsError, match=r"ring.*cudnn or flash"):
        Acceleration(parallel="ring").validated()
    Acceleration(parallel="ring", attention="cudnn").validated()


def test_joining_without_a_process_group_or_with_another_family_says_what_to_do(editor):
    with pytest.raises(SettingsError, match="torchrun"):
        join_sequence_parallel(editor.model.pipe, WanFamily(), "ulysses", torch.device("cpu"))
    with pytest.raises(SettingsError, match="Wan models; cogvideox"):
        join_sequence_parallel(None, CogVideoXFamily(), "ulysses", torch.device("cpu"))
