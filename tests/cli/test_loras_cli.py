"""``kvlock loras`` and ``kvlock edit --lora``: listing, recording a folder, an edit with a LoRA named in its
trace, and every kind of bad LoRA refused with exit code 5 before the model loads."""

from __future__ import annotations

import json
import tomllib

import pytest

from kvlock.loading.load import load_model
from kvlock.world.tiny import build_tiny_wan

from ..support.loras import save_lora, write_safetensors_header
from .test_cli import base_args, kvlock, media  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-files")
    save_lora(load_model("tiny").pipe.transformer, folder, "tiny-style", rank=4, seed=1)
    save_lora(build_tiny_wan().transformer, folder, "for-wan", rank=4, seed=2)  # another base model
    write_safetensors_header(folder / "full.safetensors", {"blocks.0.attn1.to_q.weight": ("F32", [320, 320])})
    return folder


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    """A config file of the test's own, so the user's configured folders never count."""
    monkeypatch.setenv("KVLOCK_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("KVLOCK_LORA_DIRS", raising=False)


def test_loras_lists_name_family_rank_size_and_fit(loras):
    listed = kvlock("loras", "--lora-dir", str(loras), "--model", "tiny", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["tiny-style"]["status"] == "ok, fits tiny" and entries["tiny-style"]["rank"] == 4
    assert entries["tiny-style"]["family"] == "wan" and entries["tiny-style"]["size"] > 0
    assert entries["for-wan"]["status"].startswith("does not fit tiny")
    assert "not a LoRA" in entries["full"]["status"]
    text = kvlock("loras", "--lora-dir", str(loras))
    assert text.returncode == 0 and "tiny-style  wan" in text.stdout and "rank 4" in text.stdout


def test_loras_add_records_the_folder_and_refuses_one_without_a_usable_lora(loras, tmp_path):
    added = kvlock("loras", "add", str(loras))
    assert added.returncode == 0, added.stderr
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    assert config["lora_dirs"] == [str(loras.resolve())]
    assert "tiny-style" in kvlock("loras").stdout  # found through the config from now on
    again = kvlock("loras", "add", str(loras))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    empty = tmp_path / "junk"
    empty.mkdir()
    write_safetensors_header(empty / "weights.safetensors", {"x.weight": ("F32", [2, 2])})
    refused = kvlock("loras", "add", str(empty))
    assert refused.returncode == 5 and "not added" in refused.stderr and "not a LoRA" in refused.stderr
    assert tomllib.loads((tmp_path / "config.toml").read_text())["lora_dirs"] == [str(loras.resolve())]


def test_edit_with_a_lora_names_it_and_its_weight_in_the_trace(media, loras, tmp_path):  # noqa: F811
    folder, _, _ = media
    out = tmp_path / "edit.mkv"
    done = kvlock(*base_args(folder, out, "--frames", "2:7", "--lora", "tiny-style:0.5", "--lora-dir", str(loras)))
    assert done.returncode == 0, done.stderr
    trace = json.loads((tmp_path / "edit.trace.json").read_text())
    assert [(x["name"], x["weight"]) for x in trace["loras"]] == [("tiny-style", 0.5)]
    assert trace["settings"]["loras"] == [{"name": "tiny-style", "weight": 0.5}]


@pytest.mark.parametrize(
    ("lora", "words"),
    [
        ("missing", "no LoRA named 'missing'"),
        ("full", "not a LoRA"),
        ("for-wan", "other sizes than the model's"),
        ("tiny-style:heavy", "NAME:WEIGHT with a number"),
        ("tiny-style:11", "weight must be in [-10, 10]"),
    ],
)
def test_edit_refuses_a_bad_lora_with_exit_code_5_before_loading(media, loras, tmp_path, lora, words):  # noqa: F811
    folder, _, _ = media
    out = tmp_path / "never.mkv"
    refused = kvlock(*base_args(folder, out, "--lora", lora, "--lora-dir", str(loras)))
    assert refused.returncode == 5 and words in refused.stderr, refused.stderr
    assert not out.exists()
