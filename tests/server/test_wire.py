"""Message translation on its own: a header becomes a typed JobSpec or a refusal naming the field, and the
engine's step event becomes the contract's JobUpdate field for field."""

from __future__ import annotations

import math

import pytest

from kvlock.errors import InvalidRequest
from kvlock.media.matte import MatteOptions
from kvlock.progress import StepProgress
from kvlock.settings import EditSettings
from kvlock_server.jobs.media_roots import MediaRoots
from kvlock_server.jobs.model import JobState
from kvlock_server.jobs.runner import LiveStatus
from kvlock_server.rpc.wire import Limits, spec_from_header, update_message
from kvlock_wire import editor_pb2 as pb

from ..support.server_helpers import header


def parse(**fields) -> object:
    return spec_from_header(header(**fields), MediaRoots(()), Limits(), lambda name: name)


def test_a_header_becomes_a_typed_spec_with_only_the_settings_it_sets():
    spec = parse(
        settings=pb.Settings(steps=7, tau=0.25, method="no_lock"),
        matte_options=pb.MatteOptions(channel="luma", threshold=0.5, dilate=3),
        rate=pb.Rational(num=24000, den=1001),
        timecode="01:00:00:00",
    )
    assert spec.settings == EditSettings(steps=7, tau=0.25, method="no_lock")
    assert spec.settings.kappa is None  # left to the model's schedule
    assert spec.matte_options == MatteOptions(channel="luma", threshold=0.5, dilate=3)
    assert spec.rate == (24000, 1001) and spec.timecode == "01:00:00:00" and spec.codec == "ffv1"
    assert (spec.source.frames, spec.source.width, spec.source.height, spec.source.pixel) == (9, 64, 48, "rgb8")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"settings": pb.Settings(steps=0)}, "steps must be in [1, 1000]"),
        ({"settings": pb.Settings(method="teleport")}, "unknown method"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"rate": pb.Rational(num=0, den=5)}, "rate 0/5"),
        ({"timecode": "25:99:00:00"}, "timecode"),
        ({"matte_options": pb.MatteOptions(channel="purple")}, "matte_options.channel"),
        ({"output": pb.OutputSpec(codec=42)}, "output.codec 42"),
        ({"job_id": "../escape"}, "job_id"),
        ({"matte_inline": pb.InlineClip(frames=3, width=64, height=48, format=pb.GRAY8)}, "matte has 3 frames"),
    ],
)
def test_a_bad_field_is_refused_by_name(fields, words):
    with pytest.raises(InvalidRequest) as info:
        parse(**fields)
    assert words in str(info.value)


def step(h: float | None) -> StepProgress:
    return StepProgress(1, 3, 4, 20, 0.5, h, 0.25, 6.0, 0.9, "fuse", 0.2, 12.0, b"png")


@pytest.mark.parametrize("h", [None, 0.0, 0.0042])
def test_the_step_event_crosses_into_the_contract_field_for_field(h):
    message = update_message("j", LiveStatus(JobState.RUNNING, message="running on here", progress=step(h)))
    assert (message.window, message.windows, message.step, message.total_steps) == (1, 3, 4, 20)
    assert (message.sigma, message.alpha, message.omega, message.s_star) == (0.5, 0.25, 6.0, pytest.approx(0.9))
    assert (message.mode, message.eta_seconds, message.preview_png, message.message) == (
        "fuse",
        12.0,
        b"png",
        "running on here",
    )
    assert math.isnan(message.h) if h is None else message.h == pytest.approx(h)  # 0.0 is a value, not "unset"


def test_a_job_without_a_step_yet_says_h_is_not_measured():
    message = update_message("q", LiveStatus(JobState.QUEUED, queue_position=3))
    assert message.state == pb.QUEUED and message.queue_position == 3 and message.total_steps == 0
    assert math.isnan(message.h)


def test_erase_settings_and_the_plate_cross_the_wire_and_only_an_erase_may_have_no_prompt():
    spec = parse(
        prompt="",
        settings=pb.Settings(erase=True, erase_keep_seen=False, plate_reach=8),
        output=pb.OutputSpec(plate=True),
    )
    assert spec.settings == EditSettings(erase=True, erase_keep_seen=False, plate_reach=8)
    assert spec.plate and spec.prompt == ""
    assert parse(settings=pb.Settings(source_plate="clean")).settings.source_plate == "clean"
    with pytest.raises(InvalidRequest, match="prompt is empty"):
        parse(prompt="", settings=pb.Settings(source_plate="clean"))
    with pytest.raises(InvalidRequest, match="erase paints the background from the clean plate"):
        parse(prompt="", settings=pb.Settings(erase=True, source_plate="original"))
    with pytest.raises(InvalidRequest, match=r"plate_reach must be in \[1, 256\]"):
        parse(settings=pb.Settings(plate_reach=0))


def test_every_engine_setting_has_its_wire_field():
    from dataclasses import fields

    missing = [f.name for f in fields(EditSettings) if f.name not in pb.Settings.DESCRIPTOR.fields_by_name]
    assert not missing, missing
