"""A window decodes only the box its composite reads (``kvlock.editing.decode_box``), and the composite runs
where the decode is: the output is the whole-frame decode's inside, the source outside (tiny Wan, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kvlock.editing.runtime
from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.editing.decode_box import decode_box, probe_decoder, resize_reach
from kvlock.editing.geometry import Box, resize_video
from kvlock.execution.acceleration import Acceleration

from ..support.clips import box_matte, make_clip

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def editor():
    """This module's own model: an editor installs its attention processors on the model it is given, so
    two editors of one model would take each other's K/V bank (the session's editor is left alone)."""
    return Editor.from_pretrained("tiny-random")


@pytest.fixture(scope="module")
def whole_frames():
    return Editor.from_pretrained("tiny-random", acceleration=Acceleration(decode="frame", composite="cpu"))


def _decoded_boxes(monkeypatch) -> list[float]:
    """Record the share of the latent grid each decode of the next edit covers."""
    shares: list[float] = []
    decode = kvlock.editing.runtime.Runtime.decode

    def spy(self, latents, plan, box):
        shares.append(box.cells(tuple(latents.shape[-2:])))
        return decode(self, latents, plan, box)

    monkeypatch.setattr(kvlock.editing.runtime.Runtime, "decode", spy)
    return shares


@pytest.mark.parametrize("geometry", ["fit", "crop_to_matte"])
def test_the_box_decode_gives_the_whole_frame_decode_s_composite(editor, whole_frames, geometry, monkeypatch):
    """A small subject in a large frame: the box is a fraction of the grid, and the result is the one
    decoding whole frames (and compositing on the CPU) gives — bit for bit on this CPU, where the convolution
    kernels round alike at either size; outside, the source."""
    frames = make_clip(5, 256, 384, seed=41)
    matte = box_matte(5, 256, 384, 100, 150, 36, 44, drift=3)
    settings = EditSettings(steps=2, height=256, width=384, geometry=geometry, feather=5)
    want = whole_frames.edit(EditRequest(frames, matte, PROMPT, settings))
    shares = _decoded_boxes(monkeypatch)
    got = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    assert got.trace.execution["decode"].startswith("box: decoded after its mid_block, 9 latent cells")
    assert want.trace.execution["decode"] == "whole frame: asked for"
    assert len(shares) == 2 and all(s < (0.9 if geometry == "fit" else 1.0) for s in shares)
    differs = np.abs(got.frames.astype(np.int16) - want.frames.astype(np.int16))
    assert differs.max() <= 1 and (differs > 0).mean() < 1e-3  # the same, to the kernels' rounding (here: 0)
    outside = np.stack([feather_matte(m, 5) for m in matte]) == 0
    assert np.array_equal(got.frames[outside], frames[outside])
    assert not np.array_equal(got.frames[~outside], frames[~outside])


def test_outputs_of_whole_frames_decode_whole_frames(editor, whole_frames, monkeypatch):
    frames = make_clip(5, 128, 192, seed=42)
    matte = box_matte(5, 128, 192, 50, 70, 20, 24)
    request = EditRequest(frames, matte, PROMPT, EditSettings(steps=2, height=128, width=192), True, True)
    want = whole_frames.edit(request)
    shares = _decoded_boxes(monkeypatch)
    got = editor.edit(request)
    assert shares == [1.0, 1.0]
    for a, b in ((got.frames, want.frames), (got.region, want.region), (got.raw, want.raw)):
        assert np.array_equal(a, b)


def test_probing_finds_the_last_whole_frame_layer_and_the_reach_after_it(editor):
    """Wan2.1's VAE (its real configuration, random weights): the middle block's attention sees the whole
    frame; after it the up blocks' 3×3 convolutions reach 6 + ½ + 3 + ¼ + 1½ + ⅛ + ¾ + ⅛ = 12¼ latent cells,
    with conv_in and the middle block's four 17¼ (13 and 18 whole cells)."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(base_dim=96).eval()
    reach = probe_decoder(vae, lambda z: vae.decode(z), torch.zeros(1, 16, 1, 8, 8))
    assert (reach.point_name, reach.point_scale, reach.after, reach.whole) == ("mid_block", 1, 13, 18)
    assert reach.point is vae.decoder.mid_block
    tiny = editor.model.pipe.vae
    reach = probe_decoder(tiny, lambda z: tiny.decode(z), torch.zeros(1, 16, 1, 8, 8))
    assert (reach.point_name, reach.after, reach.whole) == ("mid_block", 9, 14)


class ConvDecoder(torch.nn.Module):
    """A decoder of convolutions and upsampling alone: 3×3, ×2, 3×3 dilated 2, ×2, 5×5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.decoder = torch.nn.Sequential(
            torch.nn.Conv2d(4, 8, 3, padding=1),
            torch.nn.Upsample(scale_factor=2),
            torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            torch.nn.Upsample(scale_factor=2),
            torch.nn.Conv2d(8, 3, 5, padding=2),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def test_a_decoder_of_convolutions_alone_decodes_cropped_latents_as_the_whole_frame(editor):
    """No whole-frame layer: the latents are cropped, grown by the reach 1 + 2/2 + 2/4 = 2½ → 3 cells; the
    composite's region, resized back to a frame of another size, reads only the box's pixels, which are the
    whole frame's (to the convolution kernels' rounding, which differs with the input's size); a margin
    short of the reach is not."""
    vae = ConvDecoder().eval()
    reach = probe_decoder(vae, vae, torch.zeros(1, 4, 8, 8))
    assert reach.point is None and reach.whole == 3
    latents = torch.randn(1, 4, 24, 40, generator=torch.Generator().manual_seed(1))
    matte = np.zeros((1, 150, 250), np.float32)
    matte[0, 60:80, 100:130] = 1.0
    box = decode_box(matte, 4, Box(0, 0, 150, 250), (96, 160), 4, reach.whole)
    assert box is not None and box.cells((24, 40)) < 0.5
    with torch.no_grad():
        whole = vae(latents)
        part = vae(latents[..., box.latent_rows, box.latent_cols])
    canvas = torch.zeros_like(whole)
    canvas[..., box.model_rows, box.model_cols] = part
    region = (slice(None), slice(None), box.rows, box.cols)
    want = resize_video(whole, 150, 250)[region]
    assert (resize_video(canvas, 150, 250)[region] - want).abs().max() < 1e-6  # convolution kernels' rounding
    short = decode_box(matte, 4, Box(0, 0, 150, 250), (96, 160), 4, reach.whole - 2)
    with torch.no_grad():
        part = vae(latents[..., short.latent_rows, short.latent_cols])
    canvas = torch.zeros_like(whole)
    canvas[..., short.model_rows, short.model_cols] = part
    assert (resize_video(canvas, 150, 250)[region] - want).abs().max() > 1e-3


@pytest.mark.parametrize(("source", "target"), [(64, 150), (150, 64), (96, 96), (100, 99), (37, 211)])
def test_the_resize_reads_only_the_positions_its_reach_names(source, target):
    rng = np.random.default_rng(source * target)
    for _ in range(10):
        start = int(rng.integers(0, target - 1))
        stop = int(rng.integers(start + 1, target + 1))
        antialias = target < source
        first, last = resize_reach(source, target, start, stop, antialias)
        signal = torch.randn(1, 1, source, 2)  # two columns: torch's antialiased filter mishandles one
        garbage = signal.clone()
        garbage[:, :, :first] = 1e6
        garbage[:, :, last:] = -1e6
        size = (target, 2)
        want = F.interpolate(signal, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        got = F.interpolate(garbage, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        assert torch.equal(got[:, :, start:stop], want[:, :, start:stop])
        if first > 0:  # and it needs all of them: one fewer changes the result
            fewer = signal.clone()
            fewer[:, :, first] = 1e6
            out = F.interpolate(fewer, size=size, mode="bilinear", align_corners=False, antialias=antialias)
            assert not torch.equal(out[:, :, start:stop], want[:, :, start:stop])


def test_a_tiling_vae_decodes_cropped_latents_and_keeps_the_background(monkeypatch):
    tiling = Editor.from_pretrained("tiny-random", acceleration=Acceleration(vae_tiling="on"))
    frames = make_clip(5, 256, 384, seed=43)
    matte = box_matte(5, 256, 384, 100, 150, 36, 44)
    shares = _decoded_boxes(monkeypatch)
    result = tiling.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=1, height=256, width=384)))
    assert len(shares) == 2 and all(s < 1.0 for s in shares)
    assert tiling.runtime.crops_latents(256, 384) and tiling.runtime.decode_margin(256, 384) == 14
    outside = np.stack([feather_matte(m, 4) for m in matte]) == 0
    assert np.array_equal(result.frames[outside], frames[outside])
