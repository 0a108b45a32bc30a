"""The hosts' colour modules with a linear plate: Blender's in real Blender-as-a-module (both bpy versions),
Resolve's against a small fake of the documented clip-property calls (Resolve cannot run here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kvlock.media.encode import write_video
from kvlock_resolve import colour as resolve_colour

from ..support.media_helpers import unique_frames, write_image_sequence

ROOT = Path(__file__).resolve().parents[2]
VENVS = {"5.0": ROOT / ".venv-blender-5.0", "5.2": ROOT / ".venv-blender-5.2"}


def _blender_colour_module():
    """The add-on's colour module on its own: it needs no Blender until it is handed Blender objects."""
    spec = importlib.util.spec_from_file_location("kvlock_blender_colour", ROOT / "plugins" / "blender" / "colour.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


blender_colour = _blender_colour_module()

OCIO_SNIPPET = """
colorspaces:
  - !<ColorSpace>
    name: Linear Rec.709
    aliases: [lin_rec709_scene, Linear]
    family: Linear
    isdata: false
  - !<ColorSpace>
    name: sRGB
    aliases: [srgb_display]
    family: Display
    isdata: false
  - !<ColorSpace>
    name: ACEScg
    encoding: scene-linear
    isdata: false
  - !<ColorSpace>
    name: Non-Color
    aliases: [lin_data]
    isdata: true
  - !<ColorSpace>
    name: AgX Log
    family: Log Encodings
    encoding: log
"""


def test_linear_spaces_come_from_the_ocio_config():
    spaces = blender_colour.linear_spaces(OCIO_SNIPPET)
    assert spaces == {"Linear Rec.709", "lin_rec709_scene", "Linear", "ACEScg"}  # data and log are not linear


def test_blender_plan_for_each_kind_of_strip():
    linear = frozenset({"Linear Rec.709", "ACEScg"})
    exr = blender_colour.plan_colour("ACEScg", "sRGB", "/plates/p.1001.exr", linear, "ffv1")
    assert (exr.linear, exr.from_media, exr.codec, exr.output_space) == (True, True, "exr", "ACEScg")
    png = blender_colour.plan_colour("sRGB", "Linear Rec.709", "/p/shot.mov", linear, "prores")
    assert (png.linear, png.codec, png.output_space) == (False, "prores", "sRGB")
    rendered = blender_colour.plan_colour("Linear Rec.709", "Linear Rec.709", None, linear, "ffv1")
    assert (rendered.from_media, rendered.output_space) == (False, "sRGB")  # a Standard render onto sRGB


@pytest.mark.parametrize("version", ["5.0", "5.2"])
def test_blender_reads_and_tags_colour_spaces_in_real_bpy(version, tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    python = VENVS[version] / "bin" / "python"
    if not python.exists():
        if os.environ.get("CI"):
            pytest.fail("bpy venvs missing: scripts/setup_blender.sh must run in CI")
        pytest.skip("bpy venvs missing: run scripts/setup_blender.sh")
    files = {"exr": [], "exr_out": []}
    for key, folder in (("exr", tmp_path / "plate"), ("exr_out", tmp_path / "out")):
        folder.mkdir()
        for n in range(2):
            px = np.full((16, 16), 2.5, np.float16)  # a linear highlight
            path = folder / f"{folder.name}.{1001 + n}.exr"
            openexr.File({}, {"R": px, "G": px.copy(), "B": px.copy()}).write(str(path))
            files[key].append(str(path))
    pngs = write_image_sequence(tmp_path / "png", unique_frames(2, 16, 16))
    movie = write_video(tmp_path / "m.mkv", unique_frames(2, 16, 16), Fraction(24))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(files | {"png": [str(p) for p in sorted(pngs.iterdir())], "movie": str(movie)}))
    env = os.environ | {"BLENDER_USER_CONFIG": str(tmp_path / "cfg"), "BLENDER_USER_SCRIPTS": str(tmp_path / "s")}
    driver = [str(python), str(ROOT / "tests" / "support" / "blender_colour_driver.py"), str(config)]
    proc = subprocess.run(driver, capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("KVLOCK-REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("KVLOCK-REPORT "))
    assert report["blender"].startswith(version)
    assert {"Linear Rec.709", "ACEScg"} <= set(report["linear_names"]) and "sRGB" not in report["linear_names"]
    for working in ("default", "Linear Rec.709"):
        plans = report[working]["plans"]
        plate = plans["plate"]  # Blender gives float images Linear Rec.709 by itself
        assert (plate["source_space"], plate["linear"], plate["codec"]) == ("Linear Rec.709", True, "exr")
        assert plate["from_media"] and plate["output_space"] == "Linear Rec.709"
        assert plans["png"]["output_space"] == plans["movie"]["output_space"] == "sRGB"
        assert not plans["solid"]["from_media"] and plans["solid"]["output_space"] == "sRGB"
    assert report["Linear Rec.709"]["sequencer"] == "Linear Rec.709"
    assert report["retagged"]["plate"]["output_space"] == "ACEScg"
    assert report["retagged"]["movie"]["linear"] and report["retagged"]["movie"]["codec"] == "ffv1"
    placed = report["placed"]
    assert placed["plate"] == {"before": "Linear Rec.709", "tagged": True, "after": "ACEScg"}
    assert placed["bogus"] == {"tagged": False, "after": "sRGB"}  # a name Blender does not know changes nothing


class FakeMediaPoolItem:
    """The two calls the README documents under "Looking up Project and Clip properties":
    ``GetClipProperty()`` (no key: a snapshot dict of every property) and ``SetClipProperty(key, value)``, whose
    return value says whether it worked; read-only properties (e.g. colour spaces an ACES workflow disables)
    refuse. Assumed, not documented: the colour keys are the Clip Attributes labels used below."""

    def __init__(self, properties: dict[str, str], read_only: tuple[str, ...] = ()) -> None:
        self._properties = dict(properties)
        self._read_only = read_only

    def GetClipProperty(self, key: str | None = None):  # noqa: N802  (Resolve's name)
        return dict(self._properties) if not key else self._properties.get(key, "")

    def SetClipProperty(self, key: str, value: str) -> bool:  # noqa: N802
        if key in self._read_only or key not in self._properties:
            return False
        self._properties[key] = value
        return True


class FakeProject:
    def __init__(self, settings: dict[str, str]) -> None:
        self._settings = settings

    def GetSetting(self, key: str | None = None):  # noqa: N802
        return dict(self._settings) if not key else self._settings.get(key, "")


RCM = FakeProject({"colorScienceMode": "davinciYRGBColorManagedv2", "colorSpaceInput": "Rec.709"})


def test_resolve_linear_exr_plate_comes_back_as_exr_with_the_sources_colour_properties():
    source = FakeMediaPoolItem(
        {
            "File Path": "/plates/p.[1001-1010].exr",
            "Input Color Space": "ACEScg",
            "Input Gamma": "Linear",
            "Clip Color": "Orange",
            "FPS": "24",
        }
    )
    clip = resolve_colour.read_clip_colour(RCM, source)
    assert clip.properties == {"Input Color Space": "ACEScg", "Input Gamma": "Linear"} and clip.linear
    plan = resolve_colour.plan_colour(source.GetClipProperty("File Path"), clip)
    assert plan.codec == "exr" and plan.tags == clip.properties
    result = FakeMediaPoolItem({"Input Color Space": "Project", "Input Gamma": "Project"})
    assert resolve_colour.tag_result(result, plan) == []
    assert result.GetClipProperty("Input Color Space") == "ACEScg" and result.GetClipProperty("Input Gamma") == "Linear"


def test_resolve_as_project_clips_need_no_tag_and_refusals_are_reported():
    source = FakeMediaPoolItem({"File Path": "/m/shot.mov", "Input Color Space": "Project"})
    clip = resolve_colour.read_clip_colour(FakeProject({"colorScienceMode": "davinciYRGB"}), source)
    plan = resolve_colour.plan_colour("/m/shot.mov", clip, "prores")
    assert (plan.codec, plan.tags, plan.linear) == ("prores", {}, False)
    aces = resolve_colour.ColourPlan("exr", True, {"Input Color Space": "ACEScg"}, "")
    refused = resolve_colour.tag_result(FakeMediaPoolItem({"Input Color Space": "x"}, ("Input Color Space",)), aces)
    assert refused and "Clip Attributes" in refused[0]
