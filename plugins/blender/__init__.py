"""KV-Lock in Blender's Video Sequence Editor: edit a strip's masked subject with the KV-Lock server.

A panel in Sequencer › Sidebar › KV-Lock edits the active strip's own media (a movie or image sequence, at
its own size and rate; strips without media are rendered by the sequencer) with a matte carried into the
plate's pixels, runs the job off the main thread through the client bridge, and places the result directly
above the source, where it replaces what the composition showed.
"""

from __future__ import annotations

import bpy

from . import job, operators, panel, settings


def register() -> None:
    settings.register()
    for cls in (*operators.CLASSES, panel.SEQUENCER_PT_kvlock):
        bpy.utils.register_class(cls)


def unregister() -> None:
    job.stop()
    for cls in reversed((*operators.CLASSES, panel.SEQUENCER_PT_kvlock)):
        bpy.utils.unregister_class(cls)
    settings.unregister()
