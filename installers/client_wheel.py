"""The client as one pure-Python wheel, for hosts' own Pythons (Blender's, Resolve's): the bridge, the wire
stubs, the Resolve script's package, and the engine's torch-free part they import (errors, the edit
settings, the progress event, and ``kvlock/media`` whole) — never the engine itself or its models."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRPCIO, PROTOBUF = "grpcio==1.85.1", "protobuf==7.36.2"
# PyAV reads strip media in the Blender add-on and media the server cannot read in Resolve; Blender bundles numpy
NUMPY, AV = "numpy>=1.26", "av>=14"
# the engine's modules that import no torch (tests/test_floors.py holds them, and media/, to that)
CLIENT_ENGINE = ("__init__.py", "errors.py", "settings.py", "progress.py")


def client_files() -> dict[Path, str]:
    """Source file → path inside the wheel."""
    files: dict[Path, str] = {}
    for package, folder in (
        ("kvlock_bridge", ROOT / "plugins" / "kvlock_bridge"),
        ("kvlock_resolve", ROOT / "plugins" / "kvlock_resolve"),
        ("kvlock_wire", ROOT / "proto" / "kvlock_wire"),
    ):
        files.update({p: f"{package}/{p.name}" for p in sorted(folder.glob("*.py"))})
    engine = ROOT / "kvlock"
    for path in [*(engine / name for name in CLIENT_ENGINE), *sorted((engine / "media").glob("*.py"))]:
        files[path] = f"kvlock/{path.relative_to(engine).as_posix()}"
    return files


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_client_wheel(folder: Path, version: str) -> Path:
    """A py3-none-any wheel (needs the generated ``editor_pb2*``, made by installing the project)."""
    if not (ROOT / "proto" / "kvlock_wire" / "editor_pb2.py").exists():
        raise SystemExit("proto/kvlock_wire/editor_pb2.py is missing: run `python proto/generate_stubs.py` first")
    name = f"kvlock_client-{version}"
    wheel = folder / f"{name}-py3-none-any.whl"
    dist = f"{name}.dist-info"
    files: dict[str, bytes] = {arc: src.read_bytes() for src, arc in client_files().items()}
    requires = "".join(f"Requires-Dist: {r}\n" for r in (GRPCIO, PROTOBUF))
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: kvlock-client\nVersion: {version}\n"
        f"Summary: KV-Lock client bridge for editor plug-ins\n{requires}"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kvlock-installers\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(arc, data) for arc, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files.items():
            zf.writestr(zipfile.ZipInfo(arc, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return wheel
