"""Install the KV-Lock server for this user: its own virtual environment and a service that starts at login.

    python installers/server.py install [--model-dir DIR ...] [--dry-run]
    python installers/server.py uninstall [--dry-run]

Torch: the CUDA build when an NVIDIA driver answers (``nvidia-smi``), the default build on macOS (Metal),
the CPU build otherwise — the choice and its reason are printed. The service is a systemd user unit
(Linux), a launchd agent (macOS) or a Task Scheduler task at logon (Windows). ``--model-dir`` folders are
recorded in the engine's config file, so ``kvlock models`` and the server see them.
``--system``/``--home`` install a layout for another OS or home (packaging, tests): service commands are
then printed, not run; ``--no-environment`` writes files without creating the venv.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import sys
import tomllib
from pathlib import Path

from layouts import SYSTEMS, Layout, display, layout, this_system
from steps import Steps

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TASK = "KV-Lock server"


def torch_choice(lay: Layout) -> tuple[list[str], str, str]:
    """(pip arguments, device, why)."""
    if lay.system == "darwin":
        return [TORCH], "mps", "macOS: the default torch build, which uses Metal (MPS) on Apple silicon"
    if shutil.which("nvidia-smi"):
        return [TORCH, "--index-url", CUDA_INDEX], "cuda", "an NVIDIA driver answers (nvidia-smi): CUDA build"
    return [TORCH, "--index-url", CPU_INDEX], "cpu", "no NVIDIA GPU found (no nvidia-smi): CPU build"


def serve_command(lay: Layout, device: str) -> list[str]:
    dtype = "bfloat16" if device == "cuda" else "float32"
    return [display(lay.venv_bin("kvlock"), lay.system), "serve", "--device", device, "--dtype", dtype]


def systemd_unit(command: list[str]) -> str:
    quoted = " ".join(f'"{c}"' if " " in c else c for c in command)
    return (
        "[Unit]\nDescription=KV-Lock server (editing backend for Resolve and Blender plug-ins)\n"
        "After=network.target\n\n[Service]\n"
        f"ExecStart={quoted}\nRestart=on-failure\nEnvironment=PYTHONUNBUFFERED=1\n\n"
        "[Install]\nWantedBy=default.target\n"
    )


def launchd_plist(lay: Layout, command: list[str]) -> bytes:
    logs = lay.home / "Library" / "Logs" / "KV-Lock"
    return plistlib.dumps(
        {
            "Label": "org.kvlock.server",
            "ProgramArguments": command,
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "StandardOutPath": str(logs / "server.log"),
            "StandardErrorPath": str(logs / "server.log"),
        }
    )


def task_xml(command: list[str]) -> str:
    args = " ".join(f'"{c}"' if " " in c else c for c in command[1:])
    return (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\n'
        "  <RegistrationInfo><Description>KV-Lock server for editor plug-ins</Description></RegistrationInfo>\n"
        "  <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>\n"
        "  <Principals><Principal id=\"Author\"><LogonType>InteractiveToken</LogonType>"
        "<RunLevel>LeastPrivilege</RunLevel></Principal></Principals>\n"
        "  <Settings><ExecutionTimeLimit>PT0S</ExecutionTimeLimit><RestartOnFailure><Interval>PT1M</Interval>"
        "<Count>3</Count></RestartOnFailure></Settings>\n"
        f"  <Actions Context=\"Author\"><Exec><Command>{command[0]}</Command>"
        f"<Arguments>{args}</Arguments></Exec></Actions>\n"
        "</Task>\n"
    )  # fmt: skip


def config_with_models(config: Path, model_dirs: list[str]) -> str:
    """The engine's config with ``model_dirs`` merged in (other keys kept)."""
    data = tomllib.loads(config.read_text()) if config.is_file() else {}
    dirs = [str(d) for d in data.get("model_dirs", [])]
    dirs += [str(Path(d).expanduser().resolve()) for d in model_dirs if str(Path(d).expanduser().resolve()) not in dirs]
    data["model_dirs"] = dirs
    lines = ["# KV-Lock engine settings (written by installers/server.py; edits are kept)"]
    for key, value in data.items():
        if isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(_toml_value(v) for v in value) + "]")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _gui_target() -> str:
    return f"gui/{os.getuid() if hasattr(os, 'getuid') else '$UID'}"


def service_commands(lay: Layout, start: bool) -> list[tuple[list[str], str]]:
    if lay.system == "darwin":
        return [(["launchctl", "bootstrap", _gui_target(), str(lay.service)], "load the agent now and at every login")]
    if lay.system == "windows":
        cmds = [(["schtasks", "/Create", "/TN", TASK, "/XML", display(lay.service, "windows"), "/F"], "register")]
        return cmds + ([(["schtasks", "/Run", "/TN", TASK], "start it now")] if start else [])
    return [
        (["systemctl", "--user", "daemon-reload"], "make systemd read the unit"),
        (["systemctl", "--user", "enable", "--now" if start else "--quiet", "kvlock.service"], "start at login"),
    ]


def install(args: argparse.Namespace, lay: Layout) -> None:
    steps = Steps(lay.record, args.dry_run)
    native = lay.system == this_system() and not args.home
    pip_args, device, why = torch_choice(lay)
    device = args.device or device
    steps.note(f"torch: {why}")
    if not args.no_environment:
        steps.run([sys.executable, "-m", "venv", str(lay.venv)], "the server's own environment")
        pip = [str(lay.venv_bin("python")), "-m", "pip", "install", "-q"]
        steps.run([*pip, "--upgrade", "pip"], "a current pip")
        steps.run([*pip, *pip_args], f"torch ({device})")
        steps.run([*pip, str(ROOT)], "the KV-Lock server")
    if args.model_dir:
        steps.write(lay.config, config_with_models(lay.config, args.model_dir))
    command = serve_command(lay, device)
    if lay.system == "darwin":
        steps.write(lay.service, launchd_plist(lay, command))
    elif lay.system == "windows":
        steps.write(lay.service, task_xml(command).encode("utf-16"))
    else:
        steps.write(lay.service, systemd_unit(command))
    for cmd, why_cmd in service_commands(lay, start=True):
        steps.run(cmd, why_cmd, execute=native and not args.no_start)
    steps.note(f"token: {display(lay.token, lay.system)} (written by the server on its first start; plug-ins read it)")
    steps.note(f"health: {display(lay.venv_bin('kvlock'), lay.system)} jobs   (lists jobs when the server is up)")
    steps.summary("KV-Lock server")


def uninstall(args: argparse.Namespace, lay: Layout) -> None:
    steps = Steps(lay.record, args.dry_run)
    native = lay.system == this_system() and not args.home
    if lay.system == "darwin":
        stop = [
            (
                ["launchctl", "bootout", f"gui/{os.getuid() if hasattr(os, 'getuid') else '$UID'}", str(lay.service)],
                "stop",
            )
        ]
    elif lay.system == "windows":
        stop = [(["schtasks", "/Delete", "/TN", TASK, "/F"], "unregister the task")]
    else:
        stop = [(["systemctl", "--user", "disable", "--now", "kvlock.service"], "stop and disable")]
    for cmd, why in stop:
        steps.run(cmd, why, execute=native and not args.no_start)
    steps.remove(lay.service)
    steps.remove(lay.venv)
    steps.note(f"kept: the job store and token under {display(lay.token.parent, lay.system)}, and {lay.config.name}")
    steps.summary("KV-Lock server removal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--model-dir", action="append", default=[], help="checkpoint folder to record (repeatable)")
    parser.add_argument("--device", choices=("cuda", "cpu", "mps"), help="override the detected device")
    parser.add_argument("--dry-run", action="store_true", help="print each action, change nothing")
    parser.add_argument("--system", choices=SYSTEMS, help="lay out for this OS (default: this one)")
    parser.add_argument("--home", help="install under this home folder instead of yours")
    parser.add_argument("--no-environment", action="store_true", help="do not create the venv")
    parser.add_argument("--no-start", action="store_true", help="write the service, print how to start it")
    args = parser.parse_args()
    lay = layout(args.system, args.home)
    (install if args.action == "install" else uninstall)(args, lay)


if __name__ == "__main__":
    main()
