"""Install the KV-Lock extension into Blender (4.5 LTS or 5.x), or print the command that does.

    python installers/blender.py install [--blender /path/to/blender] [--platform ...] [--dry-run]
    python installers/blender.py uninstall [--blender /path/to/blender] [--dry-run]

Builds the extension zip (``blender_extension.py``: the add-on, the client wheel, grpcio/protobuf wheels for
the platform) and installs it into that Blender's user extensions with Blender's own command line
(``--command extension install-file``), which also installs the wheels and enables the add-on. Without
``--blender`` the zip is built and the command to run is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blender_extension import PLATFORMS, build, this_platform
from client_wheel import ROOT
from layouts import layout
from steps import Steps

REPO = "user_default"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--blender", help="the Blender executable to install into")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default=this_platform())
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the zip is built")
    parser.add_argument("--wheelhouse", type=Path, help="take grpcio/protobuf wheels from this folder only")
    parser.add_argument("--dry-run", action="store_true", help="print each action, change nothing")
    args = parser.parse_args()
    steps = Steps(layout().record, args.dry_run)
    blender = args.blender or "blender"
    if args.action == "install":
        if args.dry_run:
            zip_path = args.out / f"kvlock-<version>-{args.platform.replace('-', '_')}.zip"
            steps.note(f"would build {zip_path}")
        else:
            zip_path = build(args.out, args.platform, args.wheelhouse)
            steps.note(f"built {zip_path}")
        command = [blender, "--background", "--command", "extension", "install-file", "-r", REPO, "-e", str(zip_path)]
        steps.run(command, "install and enable in Blender", execute=args.blender is not None)
        if args.blender is None:
            steps.note("or in Blender: Edit › Preferences › Get Extensions › ⌄ › Install from Disk…")
        steps.summary("KV-Lock for Blender")
    else:
        command = [blender, "--background", "--command", "extension", "remove", f"{REPO}.kvlock"]
        steps.run(command, "remove from Blender", execute=args.blender is not None)
        steps.summary("KV-Lock for Blender removal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
