"""The extension zip: it builds, Blender's own validator accepts it, and it installs and registers in real bpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..support.blender_launch import ROOT, VENVS

pytestmark = pytest.mark.skipif(
    not all((v / "bin" / "python").exists() for v in VENVS.values()) and not os.environ.get("CI"),
    reason="bpy venvs missing: run scripts/setup_blender.sh",
)


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "installers" / "blender_extension.py"),
            "--out",
            str(out),
            "--platform",
            "linux-x64",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def test_zip_holds_the_addon_the_client_and_wheels_for_both_pythons(extension_zip):
    assert extension_zip.name == "kvlock-0.1.0-linux_x64.zip"
    with zipfile.ZipFile(extension_zip) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
        wheels = [n for n in names if n.startswith("wheels/")]
        client = next(n for n in wheels if "kvlock_client" in n)
        with zf.open(client) as raw, zipfile.ZipFile(raw) as wheel:
            inside = set(wheel.namelist())
    assert {"__init__.py", "operators.py", "job.py", "blender_manifest.toml"} <= names
    assert all(f'"./{w}"' in manifest for w in wheels) and 'platforms = ["linux-x64"]' in manifest
    assert any("grpcio" in w and "cp311" in w for w in wheels) and any("grpcio" in w and "cp313" in w for w in wheels)
    assert any("protobuf" in w for w in wheels)
    assert any(w.startswith("wheels/av-") and "abi3" in w for w in wheels)  # decodes strip media, both Pythons
    light = {"kvlock/settings.py", *(f"kvlock/media/{m}.py" for m in ("atomic", "decode", "exr", "timecode"))}
    assert {"kvlock_bridge/render.py", "kvlock_wire/editor_pb2.py", *light} <= inside
    assert not any(n.startswith("kvlock/editor") or n.startswith("kvlock/models") for n in inside)  # no engine


@pytest.mark.parametrize("version", ["5.0", "5.2"])
def test_blender_validates_installs_and_registers_it(version, extension_zip, tmp_path):
    python = VENVS[version] / "bin" / "python"
    site = next((VENVS[version] / "lib").glob("python3.*/site-packages"))
    validator = next(site.glob("bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    proc = subprocess.run([str(python), str(validator), "validate", str(extension_zip)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "BLENDER_USER_EXTENSIONS": str(tmp_path / "extensions"),
        "BLENDER_USER_CONFIG": str(tmp_path / "config"),
        "BLENDER_USER_SCRIPTS": str(tmp_path / "scripts"),
    }
    proc = subprocess.run(
        [str(python), str(ROOT / "tests" / "support" / "blender_install_check.py"), str(extension_zip)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("KVLOCK-REPORT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(line.removeprefix("KVLOCK-REPORT "))
    assert report["install"] == ["FINISHED"] and report["enabled"] and report["panel"]
    assert set(report["operators"]) >= {"kvlock_render", "kvlock_cancel", "kvlock_refresh", "kvlock_place_result"}
    assert str(tmp_path / "extensions") in report["bridge"]  # the client came from the zip's wheel
    assert report["av_installed"]  # Blender put the zip's PyAV wheel beside it
