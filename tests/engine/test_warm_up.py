"""The warm-up before a server's first edit: every pass kind compiled, and the foreground's token count
dynamic, so an edit with a matte of a size never seen compiles nothing new."""

from __future__ import annotations

import pytest

from kvlock import EditRequest, EditSettings
from kvlock.editing.editor import Editor
from kvlock.execution.acceleration import Acceleration
from kvlock.execution.warm_up import warm_up

from ..support.clips import box_matte, make_clip


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.fixture()
def compiled():
    import torch._dynamo

    torch._dynamo.reset()
    editor = Editor.from_pretrained("tiny-random", acceleration=Acceleration(compile="aot_eager"))
    yield editor
    torch._dynamo.reset()


def test_an_eager_editor_is_not_warmed(editor):
    assert warm_up(editor) == {}


def test_after_the_warm_up_a_new_matte_size_compiles_nothing(compiled):
    d = compiled.model.defaults
    seconds = warm_up(compiled)
    assert set(seconds) == {"plain", "foreground", "fused", "background source", "plain again"}
    warmed = _graphs()
    assert warmed > 0
    frames = make_clip(d.frames, d.height, d.width, seed=2)
    matte = box_matte(d.frames, d.height, d.width, 8, 12, 40, 30, drift=1)  # neither of the warm-up's sizes
    for settings in (
        EditSettings(steps=2, alpha_fixed=1.0),
        EditSettings(steps=2, alpha_fixed=0.5),
        EditSettings(steps=2, method="no_lock"),
        EditSettings(steps=2, alpha_fixed=1.0, source_pass="background"),
    ):
        compiled.edit(EditRequest(frames, matte, "a red cube", settings))
    assert _graphs() == warmed


def test_without_the_warm_up_a_new_matte_size_compiles(compiled):
    """The guard of the test above: the counter does see the compilation a new size causes."""
    d = compiled.model.defaults
    frames = make_clip(d.frames, d.height, d.width, seed=2)
    settings = EditSettings(steps=1, alpha_fixed=1.0)
    counts = []
    for box in ((8, 12, 40, 30), (20, 20, 16, 16)):
        compiled.edit(EditRequest(frames, box_matte(d.frames, d.height, d.width, *box), "a cube", settings))
        counts.append(_graphs())
    assert counts[1] > counts[0]


@pytest.mark.parametrize("family", ["cogvideox", "ltx"])
def test_the_other_families_warm_up_every_pass_kind(family):
    import torch._dynamo

    from kvlock.families import family_for_pipeline
    from kvlock.loading.load import LoadedModel
    from kvlock.world import tiny_families as tf

    build, defaults = {
        "cogvideox": (tf.build_tiny_cogvideox, tf.TINY_COGVIDEOX_DEFAULTS),
        "ltx": (tf.build_tiny_ltx, tf.TINY_LTX_DEFAULTS),
    }[family]
    pipe = build()
    model = LoadedModel(
        family, family_for_pipeline(type(pipe).__name__), pipe, defaults, torch.device("cpu"), torch.float32
    )
    torch._dynamo.reset()
    try:
        seconds = warm_up(Editor(model, Acceleration(compile="aot_eager")))
    finally:
        torch._dynamo.reset()
    assert set(seconds) == {"plain", "foreground", "fused", "background source", "plain again"}


def test_a_server_whose_warm_up_fails_still_starts_with_the_model_loaded(monkeypatch, caplog):
    import kvlock_server.executors.inprocess as executor_module

    def broken(editor):
        raise RuntimeError("no kernel for this card")

    monkeypatch.setattr(executor_module, "warm_up", broken)
    executor = executor_module.InProcessExecutor(acceleration=Acceleration(compile="aot_eager"))
    with caplog.at_level("WARNING", logger="kvlock.server"):
        executor.preload("tiny-random")
    assert executor.loaded() == {"tiny-random"}
    assert "warm-up failed (RuntimeError: no kernel for this card)" in caplog.text
