"""KV-Lock in DaVinci Resolve (Free and Studio): a Workspace › Scripts dialog on the client bridge.

``host`` is everything asked of Resolve, ``controller`` the dialog's logic, ``dialog`` the UIManager window.
"""

from __future__ import annotations

from .controller import Controller, Form
from .host import HostError, Shot

__all__ = ["Controller", "Form", "HostError", "Shot"]
