"""A real multi-node Ray cluster on this machine, started the way docs/ray.md tells a studio to start one.

One head node that runs nothing (``--num-cpus 0``, like a head without a GPU) and ``workers`` worker nodes
of ``cpus`` cores each — each node its own raylet, so a worker's death is a real process dying on a real
node. Token authentication stays on, with a token made for this cluster; the calling process gets the
same environment so its driver can join.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# Ray's driver reads its token once per process, so every cluster this process starts shares one
TOKEN = secrets.token_hex(32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, folder: Path, workers: int = 2, cpus: int = 1, object_store_mb: int = 256) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        token = folder / "ray-token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        self.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        store = ["--object-store-memory", str(object_store_mb * 1024**2)]
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", *store]
        self._ray("start", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false", *common)
        for _ in range(workers):
            self._ray("start", "--address", self.address, "--num-cpus", str(cpus), *common)

    def _ray(self, *args: str) -> None:
        done = subprocess.run([RAY, *args], env=os.environ.copy(), capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
