"""Install the KV-Lock menu script for DaVinci Resolve (Free and Studio).

    python installers/resolve.py install [--all-users] [--python PATH] [--dry-run]
    python installers/resolve.py uninstall [--all-users] [--python PATH] [--dry-run]

The script goes to Fusion/Scripts/Utility (every page's Workspace › Scripts menu), per user or for all
users. Resolve runs menu scripts with the Python it finds on the machine — a python.org install in the
standard place (Windows, macOS) or the system's python3 (Linux) — so the client (``kvlock_resolve``, the
bridge) and its dependencies are installed into that Python's user site-packages. When no suitable Python
(3.9 or newer) is found, the installer says which paths it looked at and stops before changing anything.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from client_wheel import AV, GRPCIO, NUMPY, PROTOBUF, ROOT, build_client_wheel
from layouts import SYSTEMS, Layout, display, layout, this_system
from steps import Steps

SCRIPT = ROOT / "plugins" / "resolve" / "KV-Lock.py"
MIN_PYTHON = (3, 9)


def python_version(python: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_python(lay: Layout, given: str | None) -> tuple[Path | None, str]:
    """Resolve's Python (or the given one), and what was checked."""
    candidates = [Path(given)] if given else lay.resolve_python_candidates()
    looked = []
    for candidate in candidates:
        version = python_version(candidate) if candidate.exists() else None
        looked.append(f"{display(candidate, lay.system)}: {f'{version[0]}.{version[1]}' if version else 'not found'}")
        if version is not None and version >= MIN_PYTHON:
            return candidate, "; ".join(looked)
    return None, "; ".join(looked)


def install(args: argparse.Namespace, lay: Layout) -> int:
    steps = Steps(lay.record, args.dry_run)
    python = None
    if not args.no_dependencies:
        python, looked = find_python(lay, args.python)
        if python is None:
            print(
                f"No Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ that Resolve would use was found ({looked}). Install "
                "Python 3 from python.org (Windows/macOS) or your distribution's python3 (Linux), then run this "
                "again, or name one with --python."
            )
            return 1
        steps.note(f"Resolve's Python: {display(python, lay.system)}")
    target = lay.resolve_scripts(args.all_users) / "KV-Lock.py"
    steps.copy(SCRIPT, target)
    if python is not None:
        with tempfile.TemporaryDirectory(prefix="kvlock-resolve-") as tmp:
            wheel = build_client_wheel(Path(tmp), "0.1.0")
            offline = ["--no-index", "--find-links", str(args.wheelhouse)] if args.wheelhouse else []
            pip = [str(python), "-m", "pip", "install", "-q", "--upgrade", *offline]
            user = [] if args.no_user else ["--user"]
            steps.run([*pip, *user, str(wheel), GRPCIO, PROTOBUF, NUMPY, AV], "the client and its dependencies")
    steps.note(f"then: Workspace › Scripts › KV-Lock in Resolve (restart Resolve if it was open); {target.parent}")
    steps.summary("KV-Lock for Resolve")
    return 0


def uninstall(args: argparse.Namespace, lay: Layout) -> int:
    steps = Steps(lay.record, args.dry_run)
    steps.remove(lay.resolve_scripts(args.all_users) / "KV-Lock.py")
    if not args.no_dependencies:
        python, _ = find_python(lay, args.python)
        if python is not None:
            steps.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "kvlock-client"], "remove the client")
    steps.summary("KV-Lock for Resolve removal")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--all-users", action="store_true", help="the machine-wide Scripts folder (needs admin)")
    parser.add_argument("--python", help="the Python Resolve uses, if not the standard one")
    parser.add_argument("--no-dependencies", action="store_true", help="only copy the script")
    parser.add_argument("--no-user", action="store_true", help="install into the Python itself, not --user")
    parser.add_argument("--wheelhouse", type=Path, help="install dependencies only from this folder (offline)")
    parser.add_argument("--dry-run", action="store_true", help="print each action, change nothing")
    parser.add_argument("--system", choices=SYSTEMS, default=this_system(), help="lay out for this OS")
    parser.add_argument("--home", help="install under this home folder instead of yours")
    args = parser.parse_args()
    lay = layout(args.system, args.home)
    return (install if args.action == "install" else uninstall)(args, lay)


if __name__ == "__main__":
    raise SystemExit(main())
