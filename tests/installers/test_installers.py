"""The installers against a temporary home and the Linux, macOS and Windows layouts: the files they write,
their permissions and service definitions, dry runs, idempotence, backups of edited files, uninstalling."""

from __future__ import annotations

import os
import plistlib
import stat
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLERS = ROOT / "installers"
WHEELHOUSE = ROOT / ".wheelhouse"


def run(script: str, *args: str, path_extra: Path | None = None, home: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "KVLOCK_"))}
    if path_extra is not None:
        env["PATH"] = f"{path_extra}{os.pathsep}{env['PATH']}"
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, str(INSTALLERS / script), *args], capture_output=True, text=True, env=env, timeout=600
    )


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def no_gpu(tmp_path) -> Path:
    """A PATH entry with no nvidia-smi in front (the machine has none either)."""
    folder = tmp_path / "bin-none"
    folder.mkdir()
    return folder


def test_server_linux_unit_config_idempotence_and_backup(tmp_path, no_gpu):
    home = tmp_path / "home"
    models = tmp_path / "models"
    models.mkdir()
    common = ("--system", "linux", "--home", str(home), "--no-environment", "--model-dir", str(models))
    first = run("server.py", "install", *common, path_extra=no_gpu)
    assert first.returncode == 0, first.stderr
    assert "torch: no NVIDIA GPU found (no nvidia-smi): CPU build" in first.stdout
    unit = home / ".config" / "systemd" / "user" / "kvlock.service"
    text = unit.read_text()
    kvlock = home / ".local" / "share" / "kvlock" / "venv" / "bin" / "kvlock"
    assert f"ExecStart={kvlock} serve --device cpu --dtype float32" in text
    assert "WantedBy=default.target" in text and "Restart=on-failure" in text
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    config = tomllib.loads((home / ".config" / "kvlock" / "config.toml").read_text())
    assert config["model_dirs"] == [str(models.resolve())]
    assert "leave for you to run (start at login): systemctl --user enable --now kvlock.service" in first.stdout
    assert f"token: {home}/.local/share/kvlock/server/token" in first.stdout and "health:" in first.stdout
    # again: nothing changes
    second = run("server.py", "install", *common, path_extra=no_gpu)
    assert "Changed 0 thing(s)" in second.stdout and f"keep {unit} (unchanged)" in second.stdout
    # a user's edit is backed up before the unit is rewritten
    unit.write_text(text.replace("Restart=on-failure", "Restart=always"))
    third = run("server.py", "install", *common, path_extra=no_gpu)
    backups = list(unit.parent.glob("kvlock.service.bak-*"))
    assert len(backups) == 1 and "Restart=always" in backups[0].read_text() and unit.read_text() == text
    assert "back up" in third.stdout
    # uninstall removes the unit and the venv folder, keeps the config and says so
    (home / ".local" / "share" / "kvlock" / "venv" / "bin").mkdir(parents=True)
    gone = run("server.py", "uninstall", "--system", "linux", "--home", str(home))
    assert gone.returncode == 0 and not unit.exists() and not (home / ".local/share/kvlock/venv").exists()
    assert "systemctl --user disable --now kvlock.service" in gone.stdout and "kept:" in gone.stdout


def test_server_macos_agent_and_windows_task(tmp_path, no_gpu):
    home = tmp_path / "mac"
    result = run("server.py", "install", "--system", "darwin", "--home", str(home), "--no-environment")
    assert result.returncode == 0, result.stderr
    agent = plistlib.loads((home / "Library" / "LaunchAgents" / "org.kvlock.server.plist").read_bytes())
    assert agent["Label"] == "org.kvlock.server" and agent["RunAtLoad"] is True
    venv_kvlock = home / "Library" / "Application Support" / "KV-Lock" / "venv" / "bin" / "kvlock"
    assert agent["ProgramArguments"] == [str(venv_kvlock), "serve", "--device", "mps", "--dtype", "float32"]
    assert "launchctl bootstrap gui/" in result.stdout and "Metal" in result.stdout
    home = tmp_path / "win"
    result = run(
        "server.py", "install", "--system", "windows", "--home", str(home), "--no-environment", path_extra=no_gpu
    )
    assert result.returncode == 0, result.stderr
    task = (home / "AppData" / "Local" / "KV-Lock" / "kvlock-server-task.xml").read_bytes().decode("utf-16")
    assert "<LogonTrigger><Enabled>true</Enabled></LogonTrigger>" in task
    assert "\\KV-Lock\\venv\\Scripts\\kvlock.exe</Command>" in task and "<Arguments>serve --device cpu" in task
    assert 'schtasks /Create /TN "KV-Lock server" /XML' in result.stdout


def test_server_dry_run_changes_nothing_and_explains_a_cuda_choice(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI 580'\n")
    smi.chmod(0o755)
    home = tmp_path / "home"
    result = run("server.py", "install", "--dry-run", "--system", "linux", "--home", str(home), path_extra=fake_bin)
    assert result.returncode == 0, result.stderr
    assert "an NVIDIA driver answers (nvidia-smi): CUDA build" in result.stdout
    assert "--index-url https://download.pytorch.org/whl/cu128" in result.stdout
    assert "would create" in result.stdout and "Would change" in result.stdout
    assert not home.exists()


def test_resolve_script_per_os_and_no_python(tmp_path):
    for system, folder in [
        ("linux", ".local/share/DaVinciResolve/Fusion/Scripts/Utility"),
        ("darwin", "Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility"),
        ("windows", "AppData/Roaming/Blackmagic Design/DaVinci Resolve/Support/Fusion/Scripts/Utility"),
    ]:
        home = tmp_path / system
        result = run("resolve.py", "install", "--system", system, "--home", str(home), "--no-dependencies")
        assert result.returncode == 0, result.stderr
        script = home / folder / "KV-Lock.py"
        assert script.read_bytes() == (ROOT / "plugins" / "resolve" / "KV-Lock.py").read_bytes()
        assert stat.S_IMODE(script.stat().st_mode) == 0o644
    everyone = run("resolve.py", "install", "--dry-run", "--all-users", "--system", "linux", "--home", str(tmp_path))
    assert "would create /opt/resolve/Fusion/Scripts/Utility/KV-Lock.py" in everyone.stdout
    missing = run(
        "resolve.py", "install", "--system", "linux", "--home", str(tmp_path / "x"), "--python", "/no/python3"
    )
    assert missing.returncode == 1 and "No Python 3.9+ that Resolve would use was found" in missing.stdout
    assert "/no/python3: not found" in missing.stdout and not (tmp_path / "x").exists()
    gone = run("resolve.py", "uninstall", "--system", "linux", "--home", str(tmp_path / "linux"), "--no-dependencies")
    assert (
        gone.returncode == 0
        and not (tmp_path / "linux" / ".local/share/DaVinciResolve/Fusion/Scripts/Utility/KV-Lock.py").exists()
    )


def test_resolve_dependencies_become_importable_by_that_python(tmp_path):
    """A stand-in for Resolve's Python: a fresh 3.11 environment, fed only from the local wheelhouse."""
    python_env = tmp_path / "resolve-python"
    venv.create(python_env, with_pip=True)
    python = python_env / "bin" / "python"
    args = ("--system", "linux", "--home", str(tmp_path / "home"), "--python", str(python), "--no-user")
    result = run("resolve.py", "install", *args, "--wheelhouse", str(WHEELHOUSE))
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run(
        [str(python), "-c", "import kvlock_resolve.launch, kvlock.media.matte_frames, grpc, av; print('ok')"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.stdout.strip() == "ok", check.stderr
    again = run("resolve.py", "install", *args, "--wheelhouse", str(WHEELHOUSE))
    assert again.returncode == 0 and "keep" in again.stdout
    gone = run("resolve.py", "uninstall", *args)
    assert gone.returncode == 0
    check = subprocess.run([str(python), "-c", "import kvlock_resolve"], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode != 0


def test_blender_installer_builds_the_zip_and_prints_the_install_command(tmp_path):
    result = run(
        "blender.py",
        "install",
        "--out",
        str(tmp_path),
        "--platform",
        "linux-x64",
        "--wheelhouse",
        str(WHEELHOUSE),
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    zip_path = tmp_path / "kvlock-0.1.0-linux_x64.zip"
    assert zip_path.is_file()
    assert f"blender --background --command extension install-file -r user_default -e {zip_path}" in result.stdout
    gone = run("blender.py", "uninstall", "--dry-run", home=tmp_path)
    assert "extension remove user_default.kvlock" in gone.stdout
