"""KV-Lock in Blender's Video Sequence Editor: edit a strip's masked subject with the KV-Lock server.

A panel in Sequencer › Sidebar › KV-Lock gathers the active strip's frames and a matte on the main
thread, runs the job off it through the client bridge, and places the result on a free channel above.
"""

from __future__ import annotations

import bpy

from . import job, operators, panel, settings


def register() -> None:
    settings.register()
    for cls in (*operators.CLASSES, panel.SEQUENCER_PT_kvlock):
        bpy.utils.register_class(cls)


def unregister() -> None:
    if job.ACTIVE is not None:
        job.ACTIVE.render.cancel.set()
    if bpy.app.timers.is_registered(job.poll):
        bpy.app.timers.unregister(job.poll)
    for cls in reversed((*operators.CLASSES, panel.SEQUENCER_PT_kvlock)):
        bpy.utils.unregister_class(cls)
    settings.unregister()
