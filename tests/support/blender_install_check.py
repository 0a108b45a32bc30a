"""Installs the extension zip into real Blender-as-a-module the way Extensions › Install from Disk does, and
reports what Blender made of it (run by a bpy venv's Python, not by pytest)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import bpy


def main() -> None:
    result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
    bridge = importlib.import_module("kvlock_bridge")
    report = {
        "blender": bpy.app.version_string,
        "install": sorted(result),
        "enabled": "bl_ext.user_default.kvlock" in bpy.context.preferences.addons,
        "panel": hasattr(bpy.types, "SEQUENCER_PT_kvlock"),
        "operators": [name for name in dir(bpy.ops.sequencer) if name.startswith("kvlock_")],
        "bridge": bridge.__file__,
        "av_installed": any(Path(os.environ["BLENDER_USER_EXTENSIONS"]).glob(".local/lib/python3.*/site-packages/av")),
    }
    print("KVLOCK-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
