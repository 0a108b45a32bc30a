"""Workspace › Scripts › KV-Lock: edit the masked subject of the clip under the playhead (or In/Out).

Resolve runs this file with ``resolve``, ``fusion`` and ``bmd`` defined; the installer copies it into
Fusion/Scripts/Utility and makes ``kvlock_resolve`` and its dependencies importable by Resolve's Python.
"""

try:
    from kvlock_resolve.dialog import run
except ImportError as exc:  # shown in Resolve's console, where a menu script's output goes
    print(f"KV-Lock is not installed for the Python Resolve uses ({exc}); run installers/resolve.py")
else:
    run(resolve, fusion, bmd)  # noqa: F821 - provided by Resolve
