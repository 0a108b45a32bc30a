"""Which window the menu script opens: the UIManager dialog where Resolve shows script windows (Studio, and
Free before 19.1), else the page on loopback (Free 19.1 and later, or an unknown version of Free).

The product and version come from the documented ``GetProductName`` and ``GetVersion``/``GetVersionString``,
read before anything touches UIManager: on Free 19.1+ a script window raises Resolve's "limitation" dialog,
which also blocks the API calls after it until someone dismisses it. ``KVLOCK_RESOLVE_UI=page`` opens the
page on Studio too (for a second screen, say).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from . import dialog, host, page
from .controller import explain


def connect(resolve: Any) -> Any:
    """The ``resolve`` a menu script gets, else the README's way in (``DaVinciResolveScript.scriptapp``)."""
    if resolve is not None:
        return resolve
    try:
        import DaVinciResolveScript
    except ImportError:
        raise SystemExit("KV-Lock: run it from Workspace › Scripts in DaVinci Resolve") from None
    return DaVinciResolveScript.scriptapp("Resolve")


def main(resolve: Any = None, bmd: Any = None, **page_options: Any) -> None:
    resolve = connect(resolve)
    try:
        product = host.product(resolve)
        wanted = os.environ.get("KVLOCK_RESOLVE_UI", "")
        if product.dialogs and bmd is not None and wanted != "page":
            dialog.run(resolve, bmd)
            return
        if wanted == "page":
            reason = "as asked (KVLOCK_RESOLVE_UI=page)"
        elif not product.dialogs:
            reason = "because this Resolve shows no UIManager window for scripts"
        else:
            reason = "because Resolve gave the script no UI dispatcher (bmd)"
        print(f"KV-Lock on {product.label}: the window is a page in your browser, {reason}", file=sys.stderr)
        page.run(resolve, **page_options)
    except Exception as exc:  # the console is all a menu script has left to say it with
        print(f"KV-Lock stopped: {explain('starting', exc)}", file=sys.stderr)
