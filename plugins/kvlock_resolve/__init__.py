"""KV-Lock in DaVinci Resolve (Free and Studio): a Workspace › Scripts window on the client bridge.

``host`` is every Resolve call (``host_markers`` the timeline markers'), ``form`` the fields, ``controller`` the
window's logic (``marker_batch`` rendering every KV-Lock marker, ``guard`` what both share), ``dialog`` the
UIManager window (Studio; Free before 19.1), ``page`` the same window served on loopback (Free 19.1+),
``launch`` picks.
"""

from __future__ import annotations

from .controller import Controller
from .form import Form
from .host import HostError, Shot

__all__ = ["Controller", "Form", "HostError", "Shot"]
