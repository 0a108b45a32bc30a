"""Workspace › Scripts › KV-Lock: edit the masked subject of the clip under the playhead (or between In/Out, or
under every timeline marker named KV-Lock).

Resolve runs this file with ``resolve`` (and, for UIManager, ``bmd``) defined; Fusion is reached through the
documented ``resolve.Fusion()``. Studio (and Free before 19.1) get a dialog; Free 19.1 and later, which show
no script windows, get the same window as a page in the browser. The installer copies this file into
Fusion/Scripts/Utility and makes ``kvlock_resolve`` and its dependencies importable by Resolve's Python.
"""

try:
    from kvlock_resolve.launch import main
except ImportError as exc:  # shown in Resolve's console, where a menu script's output goes
    print(f"KV-Lock is not installed for the Python Resolve uses ({exc}); run installers/resolve.py")
else:
    main(globals().get("resolve"), globals().get("bmd"))
