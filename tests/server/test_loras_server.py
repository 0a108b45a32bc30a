"""LoRAs over gRPC on loopback: listed by ListLoras (with whether each fits a model), named in a submission's
settings, refused with INVALID_ARGUMENT or FAILED_PRECONDITION before any upload, named in the trace, and
switched between jobs on the one loaded model."""

from __future__ import annotations

import json
from dataclasses import asdict

import grpc
import numpy as np
import pytest

from kvlock.world.tiny import TINY_DEFAULTS, build_tiny_wan
from kvlock_bridge import ArrayClip, Params, RequestRejectedError
from kvlock_wire import editor_pb2 as pb

from ..support.clips import box_matte, make_clip
from ..support.loras import save_lora, write_safetensors_header
from ..support.server_helpers import client, header, raw_stub, start, states, wait_for


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-server")
    build_tiny_wan().save_pretrained(root / "models" / "wan")
    (root / "models" / "wan" / "kvlock.json").write_text(json.dumps(asdict(TINY_DEFAULTS)))
    loras = root / "loras"
    transformer = build_tiny_wan().transformer
    save_lora(transformer, loras, "style", rank=4, seed=1)
    save_lora(transformer, loras, "other", rank=2, seed=2)
    write_safetensors_header(loras / "full.safetensors", {"blocks.0.attn1.to_q.weight": ("F32", [24, 24])})
    # a LoRA made for the embedded model ("tiny", 320 wide) does not fit the 24-wide one
    write_safetensors_header(
        loras / "for-tiny.safetensors",
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": ("F32", [4, 320]),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": ("F32", [320, 4]),
        },
    )
    return root


@pytest.fixture(scope="module")
def app(folders, tmp_path_factory):
    app = start(
        tmp_path_factory.mktemp("state"), model_dirs=[str(folders / "models")], lora_dirs=[str(folders / "loras")]
    )
    yield app
    app.stop(grace=0)


def clips():
    frames = make_clip(9, 64, 64, seed=3)
    matte = (box_matte(9, 64, 64, 16, 16, 24, 24, drift=1) * 255).astype(np.uint8)
    return ArrayClip("Source", frames), ArrayClip("Matte", matte)


def test_list_loras_names_each_with_its_rank_and_whether_it_fits(app):
    c = client(app)
    listed = {lora.name: lora for lora in c.list_loras()}
    assert {"style", "other", "full", "for-tiny"} <= set(listed)
    assert listed["style"].loadable and listed["style"].rank == 4 and listed["style"].family == "wan"
    assert not listed["full"].loadable and "not a LoRA" in listed["full"].status
    fits = {lora.name: lora for lora in c.list_loras(model="wan")}
    assert fits["style"].loadable and fits["style"].status == "ok, fits wan"
    assert not fits["for-tiny"].loadable and "does not fit wan" in fits["for-tiny"].status
    with pytest.raises(RequestRejectedError) as unknown:
        c.list_loras(model="nowhere")
    assert unknown.value.code == "NOT_FOUND"


@pytest.mark.parametrize(
    ("lora", "code", "words"),
    [
        ("missing", "INVALID_ARGUMENT", "no LoRA named 'missing'"),
        ("full", "FAILED_PRECONDITION", "not a LoRA"),
        ("for-tiny", "FAILED_PRECONDITION", "other sizes than the model's"),
        ("../loras/style", "INVALID_ARGUMENT", "LoRA name"),  # a path is never a name
    ],
)
def test_bad_loras_are_refused_at_submission(app, lora, code, words):
    source, matte = clips()
    params = Params("a red ball", model="wan", settings={"steps": 2, "loras": [{"name": lora}]})
    stub, metadata = raw_stub(app)
    head = header(f"bad-{abs(hash(lora))}", model="wan")
    head.settings.CopyFrom(pb.Settings(steps=2, loras=[pb.LoraChoice(name=lora)]))
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitEdit(iter([pb.SubmitEditRequest(header=head)]), metadata=metadata)
    assert refused.value.code().name == code and words in refused.value.details()
    if "/" not in lora:  # the bridge says the same through its own error
        with pytest.raises(RequestRejectedError, match=words):
            client(app).submit(source, matte, params, job_id=f"bridge-{abs(hash(lora))}")
    assert not any(job.startswith(("bad-", "bridge-")) for job in states(app))


def test_a_lora_weight_out_of_range_is_invalid_argument(app):
    stub, metadata = raw_stub(app)
    head = header("heavy", model="wan")
    head.settings.CopyFrom(pb.Settings(steps=2, loras=[pb.LoraChoice(name="style", weight=50.0)]))
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitEdit(iter([pb.SubmitEditRequest(header=head)]), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "[-10, 10]" in refused.value.details()


def test_jobs_switch_loras_on_one_loaded_model_and_the_trace_names_them(app):
    c = client(app)
    source, matte = clips()
    runs = [("with-style", ["style:0.8"]), ("with-other", [{"name": "other", "weight": -0.5}]), ("plain", [])]
    for job_id, loras in runs:
        params = Params("a red ball", model="wan", settings={"steps": 2, "loras": loras})
        c.submit(source, matte, params, job_id=job_id)
        wait_for(lambda job_id=job_id: states(app)[job_id] == "succeeded", timeout=180)
    traces = {job: json.loads((app.store.folder(job) / "trace.json").read_text()) for job, _ in runs}
    assert [(x["name"], x["weight"]) for x in traces["with-style"]["loras"]] == [("style", 0.8)]
    assert [(x["name"], x["weight"]) for x in traces["with-other"]["loras"]] == [("other", -0.5)]
    assert traces["plain"]["loras"] == []
    assert traces["with-other"]["execution"]["lora_switch"]["loaded"] == ["other"]
    editors = app.executor.editors.loaded()
    assert len(editors) == 1  # one model, loaded once for the three jobs
    editor = app.executor.editors.get(editors[0], "unused")
    assert editor.runtime.loras.loads == 2


def test_loras_cross_the_wire_as_typed_choices_and_too_many_are_refused_cheaply():
    from kvlock.errors import InvalidRequest
    from kvlock.settings import EditSettings, LoraChoice
    from kvlock_bridge.client import settings_message
    from kvlock_server.rpc.wire import settings_from_message

    sent = EditSettings(steps=3, loras=("style:0.5", "other"))
    back = settings_from_message(settings_message(sent))
    assert back.loras == (LoraChoice("style", 0.5), LoraChoice("other", 1.0)) and back.steps == 3
    unset = pb.Settings(loras=[pb.LoraChoice(name="style")])  # weight unset: 1
    assert settings_from_message(unset).loras == (LoraChoice("style", 1.0),)
    many = pb.Settings(loras=[pb.LoraChoice(name=f"l{i}") for i in range(9)])
    with pytest.raises(InvalidRequest, match="at most 8"):
        settings_from_message(many)
