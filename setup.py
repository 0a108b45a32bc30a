"""Build hook: generate the gRPC stubs from the committed .proto before packaging (see proto/generate_stubs.py)."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStubs(build_py):
    def run(self) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "proto"))
        import generate_stubs

        generate_stubs.write(generate_stubs.generate())
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
