"""Generate the Python stubs of the wire contract from ``proto/kvlock/v1/*.proto`` into ``kvlock_wire``.

Run at build time (``setup.py`` hooks it into ``build_py``) and by hand; ``--check`` exits 1 when the
stubs present differ from what the committed .proto generates. protoc writes absolute imports named
after the proto package (``from kvlock.v1 import …``), which would collide with the engine package, so
they are rewritten to relative imports inside ``kvlock_wire``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE
TARGET = HERE / "kvlock_wire"
PROTOS = sorted((HERE / "kvlock" / "v1").glob("*.proto"))


def generate() -> dict[str, str]:
    """Return {file name: content} of the generated stubs, without touching ``kvlock_wire``."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as out:
        args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
        args += [str(p) for p in PROTOS]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(p.name for p in PROTOS)}")
        files = {}
        for path in sorted((Path(out) / "kvlock" / "v1").iterdir()):
            text = path.read_text()
            text = re.sub(r"^from kvlock\.v1 import (\w+)", r"from . import \1", text, flags=re.M)
            files[path.name] = text
        return files


def write(files: dict[str, str]) -> None:
    for name, text in files.items():
        (TARGET / name).write_text(text)


def stale(files: dict[str, str]) -> list[str]:
    return [
        name for name, text in files.items() if not (TARGET / name).is_file() or (TARGET / name).read_text() != text
    ]


def main(argv: list[str]) -> int:
    files = generate()
    if "--check" in argv:
        differ = stale(files)
        if differ:
            print(f"stubs differ from the .proto: {', '.join(differ)}; run python proto/generate_stubs.py")
            return 1
        print("stubs match the .proto")
        return 0
    write(files)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
