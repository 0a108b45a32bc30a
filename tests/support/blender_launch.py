"""Running ``blender_driver.py`` in a bpy venv with the add-on linked in as a user extension (used by the
add-on's tests and by ``bench/blender_stall.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = {"5.0": ROOT / ".venv-blender-5.0", "5.2": ROOT / ".venv-blender-5.2"}


class DriverFailed(Exception):
    pass


def run_driver(version: str, scenario: str, cfg: dict, work: Path, timeout: float = 600) -> dict:
    """The driver's report for ``scenario`` on ``cfg`` in Blender ``version``; ``work`` holds its user folders."""
    extensions = work / "extensions" / "user_default"
    extensions.mkdir(parents=True, exist_ok=True)
    if not (extensions / "kvlock").exists():
        (extensions / "kvlock").symlink_to(ROOT / "plugins" / "blender")
    config = work / f"config-{scenario}.json"
    config.write_text(json.dumps(cfg))
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("plugins", "proto", ".")),
        "BLENDER_USER_EXTENSIONS": str(work / "extensions"),
        "BLENDER_USER_CONFIG": str(work / "config"),
        "BLENDER_USER_SCRIPTS": str(work / "scripts"),
        "KVLOCK_TOKEN": "",
    }
    python = VENVS[version] / "bin" / "python"
    proc = subprocess.run(
        [str(python), str(ROOT / "tests" / "support" / "blender_driver.py"), scenario, str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("KVLOCK-REPORT ")]
    if proc.returncode != 0 or not lines or "Traceback" in proc.stderr:
        raise DriverFailed(f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("KVLOCK-REPORT "))
