"""Procedural captioned clips with exact object mattes: the training data of the project's own model and
the test cases of its quality benchmark.

A scene is a background (plain, stripes, checkers, gradient or clouds in a dark or light tone, slowly
panning) and one or two objects (shape × colour × size × motion). Rendering is vectorised in torch on any
device, so training draws fresh clips on the GPU; everything is reproducible from a seed. Some
(shape, colour) pairs are held out of training so the benchmark can ask for combinations never seen.
The matte of an object is the alpha it was composited with, so it is exact by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.78, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "white": (0.97, 0.97, 0.97),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.13, "large": 0.20}  # half-extent as a fraction of the frame side
MOTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "still": (0.0, 0.0)}
MOTION_WORDS = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "still": "staying still",
}
BACKGROUNDS = ("plain", "stripes", "checkers", "gradient", "clouds")
TONES = ("dark", "light")
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("circle", "purple"), ("square", "yellow"), ("triangle", "white"), ("cross", "green"), ("triangle", "red")}
)
SPEED = 0.018  # of the frame side per frame
EDGE = 0.9  # pixels of anti-aliasing at shape edges


def vocabulary() -> list[str]:
    """Every word a caption can use, for the word-level tokenizer."""
    words = {"a", "and", "on", "moving", "staying", "still", *COLOURS, *SHAPES, *SIZES, *MOTIONS, *BACKGROUNDS, *TONES}
    return sorted(words)


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    size: str
    motion: str
    x: float  # start centre, fraction of the frame
    y: float

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {MOTION_WORDS[self.motion]}"


@dataclass(frozen=True)
class SceneSpec:
    background: str
    tone: str
    objects: tuple[ObjectSpec, ...]
    seed: int  # texture details (tints, frequencies, pan) derive from it

    def caption(self) -> str:
        return " and ".join(o.phrase() for o in self.objects) + f" on {self.tone} {self.background}"

    def with_object(self, index: int, **changes: str) -> SceneSpec:
        """The same scene with one object's attributes changed (an edit's target)."""
        objects = list(self.objects)
        current = objects[index]
        objects[index] = ObjectSpec(**{**current.__dict__, **changes})
        return SceneSpec(self.background, self.tone, tuple(objects), self.seed)


def _allowed(shape: str, colour: str, split: str) -> bool:
    held = (shape, colour) in HELD_OUT
    return held if split == "heldout" else not held


def sample_scene(generator: torch.Generator, split: str = "train", max_objects: int = 2) -> SceneSpec:
    """One random scene; ``split="train"`` never uses a held-out (shape, colour) pair, ``"heldout"`` only those."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    def uniform(lo, hi):
        return lo + (hi - lo) * float(torch.rand(1, generator=generator))

    count = 1 if max_objects == 1 or float(torch.rand(1, generator=generator)) < 0.7 else 2
    objects = []
    for _ in range(count):
        while True:
            shape, colour = pick(SHAPES), pick(list(COLOURS))
            if _allowed(shape, colour, split):
                break
        objects.append(
            ObjectSpec(shape, colour, pick(list(SIZES)), pick(list(MOTIONS)), uniform(0.3, 0.7), uniform(0.3, 0.7))
        )
    return SceneSpec(
        pick(BACKGROUNDS), pick(TONES), tuple(objects), int(torch.randint(2**31 - 1, (1,), generator=generator))
    )


def _texture(scene: SceneSpec) -> list[float]:
    """The scene's texture numbers, drawn from its own seed: two tints, angle, pan, period, cloud waves."""
    g = torch.Generator().manual_seed(scene.seed)
    r = torch.rand(24, generator=g).tolist()
    base = 0.18 if scene.tone == "dark" else 0.68
    shift = 0.10 if scene.tone == "dark" else -0.10
    tint_a = [base + 0.12 * r[i] for i in range(3)]
    tint_b = [base + 0.12 * r[3 + i] + shift for i in range(3)]
    return [*tint_a, *tint_b, r[6] * 2 * math.pi, 0.5 + r[7], 3.0 + 3.0 * r[8], *r[9:21]]


def _pattern(kind: str, p: torch.Tensor, frames: int, size: int, device: torch.device) -> torch.Tensor:
    """(B, T, H, W) mix in [0, 1] between the two tints for B scenes of one background kind."""
    b = p.shape[0]
    ax = torch.arange(size, device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(ax, ax, indexing="ij")
    t = torch.arange(frames, device=device, dtype=torch.float32)[None, :, None, None]
    angle, pan, period = (p[:, i].view(b, 1, 1, 1) for i in (6, 7, 8))
    pan = pan * 0.6 * size * SPEED
    period = size / period
    u = xs * torch.cos(angle) + ys * torch.sin(angle) + pan * t
    if kind == "plain":
        return torch.zeros_like(u)
    if kind == "stripes":
        return 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * u / period))
    if kind == "checkers":
        v = -xs * torch.sin(angle) + ys * torch.cos(angle)
        return 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * u / period) * torch.sin(2 * math.pi * v / period))
    if kind == "gradient":
        lo, hi = u.amin(dim=(2, 3), keepdim=True), u.amax(dim=(2, 3), keepdim=True)
        return (u - lo) / (hi - lo + 1e-6)
    clouds = torch.zeros_like(u)
    for k in range(4):
        kx, ky, phase = (p[:, 9 + 3 * k + i].view(b, 1, 1, 1) for i in range(3))
        kx, ky = 2 * math.pi * (1 + 2 * kx) / size, 2 * math.pi * (1 + 2 * ky) / size
        clouds = clouds + torch.sin(kx * (xs + pan * t) + ky * ys + 2 * math.pi * phase)
    return 0.5 + 0.5 * torch.tanh(clouds / 2)


def _backgrounds(scenes: list[SceneSpec], frames: int, size: int, device: torch.device) -> torch.Tensor:
    """(B, T, 3, H, W) backgrounds in [0, 1]: two tints of one tone mixed by the pattern, panning slowly."""
    p = torch.tensor([_texture(s) for s in scenes], device=device)
    mix = torch.empty(len(scenes), frames, size, size, device=device)
    for kind in BACKGROUNDS:
        members = [i for i, s in enumerate(scenes) if s.background == kind]
        if members:
            index = torch.tensor(members, device=device)
            mix[index] = _pattern(kind, p[index], frames, size, device)
    b = len(scenes)
    tint_a, tint_b = p[:, 0:3].view(b, 1, 3, 1, 1), p[:, 3:6].view(b, 1, 3, 1, 1)
    return tint_a * (1 - mix[:, :, None]) + tint_b * mix[:, :, None]


def _sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance in pixels (negative inside) of one shape with half-extent r."""
    if shape == "circle":
        return torch.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - r * 0.85
    if shape == "cross":
        arm = r * 0.33
        return torch.minimum(torch.maximum(dx.abs() - r, dy.abs() - arm), torch.maximum(dy.abs() - r, dx.abs() - arm))
    edges = []
    for k in range(3):  # an upward triangle inscribed in the circle of radius r
        angle = math.pi / 2 + k * 2 * math.pi / 3 + math.pi / 3
        edges.append(dx * math.cos(angle) - dy * math.sin(angle) - r * 0.5)
    return torch.stack(edges).amax(dim=0)


def _alphas(objects: list[ObjectSpec], frames: int, size: int, device: torch.device) -> torch.Tensor:
    """(N, T, H, W) coverage in [0, 1] of N objects over time, from signed distances in pixels."""
    n = len(objects)
    shape = torch.tensor([SHAPES.index(o.shape) for o in objects], device=device)
    motion = torch.tensor([MOTIONS[o.motion] for o in objects], device=device, dtype=torch.float32)
    x0 = torch.tensor([o.x for o in objects], device=device).view(n, 1, 1, 1)
    y0 = torch.tensor([o.y for o in objects], device=device).view(n, 1, 1, 1)
    r = torch.tensor([SIZES[o.size] for o in objects], device=device).view(n, 1, 1, 1) * size
    ax = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(ax, ax, indexing="ij")
    t = torch.arange(frames, device=device, dtype=torch.float32).view(1, frames, 1, 1) - (frames - 1) / 2
    dx = xs - (x0 + motion[:, 0].view(n, 1, 1, 1) * SPEED * t) * size
    dy = ys - (y0 + motion[:, 1].view(n, 1, 1, 1) * SPEED * t) * size
    sdf = torch.empty_like(dx)
    for index, name in enumerate(SHAPES):
        members = (shape == index).nonzero().squeeze(1)
        if members.numel():
            sdf[members] = _sdf(name, dx[members], dy[members], r[members])
    return torch.clamp(0.5 - sdf / (2 * EDGE), 0.0, 1.0)


def render_batch(
    scenes: list[SceneSpec],
    frames: int = 17,
    size: int = 96,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render scenes together: (videos (B, T, 3, H, W), mattes (B, 2, T, H, W), backgrounds), in [0, 1].

    A scene with one object has an all-zero second matte. Object i is composited over object i − 1.
    """
    device = torch.device(device)
    background = _backgrounds(scenes, frames, size, device)
    video = background.clone()
    mattes = torch.zeros(len(scenes), 2, frames, size, size, device=device)
    for slot in range(2):
        members = [i for i, s in enumerate(scenes) if len(s.objects) > slot]
        if not members:
            continue
        objects = [scenes[i].objects[slot] for i in members]
        alpha = _alphas(objects, frames, size, device)
        colour = torch.tensor([COLOURS[o.colour] for o in objects], device=device).view(-1, 1, 3, 1, 1)
        index = torch.tensor(members, device=device)
        video[index] = video[index] * (1 - alpha[:, :, None]) + colour * alpha[:, :, None]
        mattes[index, slot] = alpha
    return video, mattes, background


def render_scene(
    scene: SceneSpec, frames: int = 17, size: int = 96, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One scene: (video (T, 3, H, W), mattes (objects, T, H, W), background (T, 3, H, W)), in [0, 1]."""
    video, mattes, background = render_batch([scene], frames, size, device)
    return video[0], mattes[0, : len(scene.objects)], background[0]


def model_batch(
    scenes: list[SceneSpec], frames: int = 17, size: int = 96, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, T, H, W) videos in [-1, 1] and (B, 1, T, H, W) union mattes, the layout the VAE takes."""
    video, mattes, _ = render_batch(scenes, frames, size, device)
    return video.permute(0, 2, 1, 3, 4) * 2 - 1, mattes.amax(dim=1, keepdim=True)
