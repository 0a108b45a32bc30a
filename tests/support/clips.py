"""Small synthetic clips and one window's inputs as the editor builds them, for tests of the engine."""

from __future__ import annotations

import numpy as np

from kvlock import Editor


def make_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 clip: smooth gradients plus noise, so any pixel change is visible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), (x + y) % 256], -1)
    clip = np.repeat(base[None], frames, 0).astype(np.int32) + rng.integers(-20, 20, (frames, height, width, 3))
    return np.clip(clip, 0, 255).astype(np.uint8)


def box_matte(frames: int, height: int, width: int, top: int, left: int, h: int, w: int, drift: int = 0) -> np.ndarray:
    """A rectangular matte that moves ``drift`` pixels right per frame."""
    matte = np.zeros((frames, height, width), np.float32)
    for t in range(frames):
        x = min(width - w, left + drift * t)
        matte[t, top : top + h, x : x + w] = 1.0
    return matte


def window_job(editor: Editor, clip_seed: int, noise_seed: int, settings):
    """One window's inputs as the editor builds them: family, pipeline, source latents, noise, masks, prompts."""
    import torch

    from kvlock.lock.token_mask import build_token_mask

    fam, pipe = editor.model.family, editor.model.pipe
    frames = make_clip(9, 64, 64, seed=clip_seed)
    matte = torch.from_numpy(box_matte(9, 64, 64, 16, 20, 28, 24, drift=1))
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        x0 = fam.encode_video(pipe, video)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed))
    masks = build_token_mask(matte, editor.model.compression)
    return fam, pipe, x0, noise, masks, editor.runtime.encode_prompts("a red cube", settings)
