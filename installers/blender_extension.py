"""Build the Blender extension zip: the add-on, the client as a pure-Python wheel, grpcio/protobuf/PyAV wheels.

    python installers/blender_extension.py --out dist/            # this machine's platform
    python installers/blender_extension.py --out dist/ --platform linux-x64 --platform windows-x64 ...

One zip per platform (``kvlock-0.1.0-linux_x64.zip`` …), as Blender's own ``extension build
--split-platforms`` makes them: grpcio and PyAV are compiled, so each zip carries the wheels for that platform
and for both Pythons current Blenders use (3.11 for 4.5 LTS and 5.0, 3.13 for 5.1 and later; PyAV's one
abi3 wheel serves both). PyAV decodes the strips' own media (Blender bundles numpy). Wheels come from the
package index with ``pip download``; the client wheel is built here from ``plugins/kvlock_bridge`` and the
generated ``kvlock_wire``.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from client_wheel import AV, GRPCIO, PROTOBUF, build_client_wheel

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "plugins" / "blender"
PYTHONS = ("3.11", "3.13")
# Blender platform name → pip platform tags, most specific first
PLATFORMS = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_15_universal2", "macosx_10_9_universal2"),
    "macos-x64": (
        "macosx_11_0_x86_64",
        "macosx_10_15_x86_64",
        "macosx_10_9_x86_64",
        "macosx_11_0_universal2",
        "macosx_10_15_universal2",
        "macosx_10_9_universal2",
    ),
    "windows-x64": ("win_amd64",),
}


def this_platform() -> str:
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "x64"
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux")
    return f"{system}-{arch}"


def manifest_version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if match is None:
        raise SystemExit("blender_manifest.toml has no version")
    return match.group(1)


def download_wheels(folder: Path, plat: str, wheelhouse: Path | None = None) -> list[Path]:
    """grpcio for each Python, protobuf and PyAV (abi3) for ``plat``: from the package index, or only from a local
    ``wheelhouse`` folder when given (offline builds)."""
    before = set(folder.glob("*.whl"))
    tags = [arg for tag in PLATFORMS[plat] for arg in ("--platform", tag)]
    if wheelhouse is not None:
        tags += ["--no-index", "--find-links", str(wheelhouse)]
    for python in PYTHONS:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", str(folder),
             "--python-version", python, *tags, GRPCIO, PROTOBUF, AV],
            check=True,
        )  # fmt: skip
    return sorted(set(folder.glob("*.whl")) - before)


def manifest_with_wheels(wheels: list[str], plat: str) -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    listed = "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]"
    text = re.sub(r"^wheels\s*=\s*\[\]", listed, text, flags=re.M)
    return text.replace('license = ["SPDX', f'platforms = ["{plat}"]\nlicense = ["SPDX', 1)


def build(out: Path, plat: str, wheelhouse: Path | None = None) -> Path:
    version = manifest_version()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"kvlock-{version}-{plat.replace('-', '_')}.zip"
    with tempfile.TemporaryDirectory(prefix="kvlock-ext-") as tmp:
        wheels_dir = Path(tmp)
        wheels = [build_client_wheel(wheels_dir, version), *download_wheels(wheels_dir, plat, wheelhouse)]
        partial = target.with_name(f".{target.name}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for src in sorted(ADDON.rglob("*")):
                if src.is_file() and "__pycache__" not in src.parts and src.name != "blender_manifest.toml":
                    zf.write(src, src.relative_to(ADDON).as_posix())
            zf.writestr("blender_manifest.toml", manifest_with_wheels([w.name for w in wheels], plat))
            for wheel in wheels:
                zf.write(wheel, f"wheels/{wheel.name}")
        partial.replace(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS), help="default: this machine's")
    parser.add_argument("--wheelhouse", type=Path, help="take grpcio/protobuf wheels from this folder only")
    args = parser.parse_args()
    for plat in args.platform or [this_platform()]:
        print(build(args.out, plat, args.wheelhouse))


if __name__ == "__main__":
    main()
