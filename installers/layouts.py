"""Where things go on each OS, as pure functions of the OS name, the home folder and the environment.

Resolve's script folders are the ones its documentation names (docs/design.md §5); ``Utility`` shows the script on
every page. The server's per-user service is a systemd user unit, a launchd agent or a Task Scheduler task.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

SYSTEMS = ("linux", "darwin", "windows")


def this_system() -> str:
    return {"win32": "windows", "darwin": "darwin"}.get(sys.platform, "linux")


@dataclass(frozen=True)
class Layout:
    system: str
    home: Path
    env: Mapping[str, str]

    def _win(self, var: str, default: str) -> Path:
        return Path(self.env.get(var) or str(self.home / default))

    @property
    def data(self) -> Path:
        """The installers' own data: the server's venv and the install record."""
        if self.system == "darwin":
            return self.home / "Library" / "Application Support" / "KV-Lock"
        if self.system == "windows":
            return self._win("LOCALAPPDATA", "AppData/Local") / "KV-Lock"
        return Path(self.env.get("XDG_DATA_HOME") or self.home / ".local" / "share") / "kvlock"

    @property
    def venv(self) -> Path:
        return self.data / "venv"

    def venv_bin(self, name: str) -> Path:
        if self.system == "windows":
            return self.venv / "Scripts" / f"{name}.exe"
        return self.venv / "bin" / name

    @property
    def record(self) -> Path:
        return self.data / "installed.json"

    @property
    def config(self) -> Path:
        """The engine's config file (``kvlock.loading.catalog``): model folders."""
        return Path(self.env.get("XDG_CONFIG_HOME") or self.home / ".config") / "kvlock" / "config.toml"

    @property
    def token(self) -> Path:
        return Path(self.env.get("XDG_DATA_HOME") or self.home / ".local" / "share") / "kvlock" / "server" / "token"

    @property
    def service(self) -> Path:
        if self.system == "darwin":
            return self.home / "Library" / "LaunchAgents" / "org.kvlock.server.plist"
        if self.system == "windows":
            return self.data / "kvlock-server-task.xml"
        return Path(self.env.get("XDG_CONFIG_HOME") or self.home / ".config") / "systemd" / "user" / "kvlock.service"

    def resolve_scripts(self, all_users: bool) -> Path:
        """Fusion/Scripts/Utility for all users or for this user."""
        if self.system == "darwin":
            base = Path("/Library") if all_users else self.home / "Library"
            root = base / "Application Support" / "Blackmagic Design" / "DaVinci Resolve" / "Fusion" / "Scripts"
        elif self.system == "windows":
            if all_users:
                root = self._win("PROGRAMDATA", "ProgramData") / "Blackmagic Design" / "DaVinci Resolve"
            else:
                root = self._win("APPDATA", "AppData/Roaming") / "Blackmagic Design" / "DaVinci Resolve" / "Support"
            root = root / "Fusion" / "Scripts"
        else:
            base = Path("/opt/resolve") if all_users else self.home / ".local" / "share" / "DaVinciResolve"
            root = base / "Fusion" / "Scripts"
        return root / "Utility"

    def resolve_python_candidates(self) -> list[Path]:
        """Pythons Resolve looks for, in its order: a standard python.org install per OS, then the system's."""
        versions = [f"3.{minor}" for minor in range(13, 5, -1)]
        if self.system == "darwin":
            framework = Path("/Library/Frameworks/Python.framework/Versions")
            return [framework / v / "bin" / f"python{v}" for v in versions] + [Path("/usr/local/bin/python3")]
        if self.system == "windows":
            local = self._win("LOCALAPPDATA", "AppData/Local") / "Programs" / "Python"
            program_files = Path(self.env.get("PROGRAMFILES") or "C:/Program Files")
            tags = [v.replace(".", "") for v in versions]
            return [local / f"Python{t}" / "python.exe" for t in tags] + [
                program_files / f"Python{t}" / "python.exe" for t in tags
            ]
        return [Path("/usr/bin/python3"), Path("/usr/local/bin/python3")]


def layout(
    system: str | None = None, home: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> Layout:
    """A layout for ``system`` under ``home``; an explicit home ignores the caller's XDG/APPDATA variables."""
    if env is None:
        env = {} if home else dict(os.environ)
    return Layout(system or this_system(), Path(home) if home else Path.home(), dict(env))


def display(path: PurePath, system: str) -> str:
    return str(PureWindowsPath(path)) if system == "windows" else str(path)
