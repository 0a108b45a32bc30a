"""Drives the KV-Lock add-on inside real Blender-as-a-module (run by a bpy venv's Python, not by pytest).

    python tests/blender_driver.py SCENARIO CONFIG.json  → prints one JSON line with what happened

Blender-as-a-module has no event loop, so nothing fires ``bpy.app.timers``: this driver stands in for it and
calls the add-on's registered timer function on its schedule until the function ends itself, exactly as
Blender's loop would. The add-on is loaded as an extension from a user repository that links to
``plugins/blender``; its Python dependencies come from PYTHONPATH (the zip bundles them instead).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import bpy

MODULE = "bl_ext.user_default.kvlock"


def enable() -> object:
    addon_utils = importlib.import_module("addon_utils")  # importable only once bpy has set up its paths
    module = addon_utils.enable(MODULE, default_set=True, handle_error=None)
    if module is None:
        raise SystemExit(f"could not enable {MODULE}")
    return module


def build_scene(cfg: dict) -> object:
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = cfg["width"], cfg["height"]
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.view_settings.view_transform = "AgX"  # the add-on must render with Standard and put this back
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    source = strips.new_movie(name="shot", filepath=cfg["source"], channel=1, frame_start=1)
    left, right = cfg["visible"]
    if hasattr(source, "left_handle"):
        source.left_handle, source.right_handle = left, right
    else:
        source.frame_final_start, source.frame_final_end = left, right
    matte = strips.new_movie(name="matte", filepath=cfg["matte"], channel=2, frame_start=cfg.get("matte_start", 1))
    if "matte_visible" in cfg:
        m_left, m_right = cfg["matte_visible"]
        if hasattr(matte, "left_handle"):
            matte.left_handle, matte.right_handle = m_left, m_right
        else:
            matte.frame_final_start, matte.frame_final_end = m_left, m_right
    editor.active_strip = source
    scene.frame_end = max(scene.frame_end, right + 4)
    props = scene.kvlock
    props.prompt = "a red cube"
    props.matte_strip = "matte"
    props.output_dir = cfg["out"]
    props.steps = cfg.get("steps", 3)
    props.seed = 7
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.address, prefs.token = cfg["address"], cfg["token"]
    return scene


def pump(job_module: object, timeout: float, on_tick=None) -> int:
    """Call the registered timer like Blender's loop; return how many times it ran."""
    ticks, deadline = 0, time.monotonic() + timeout
    while bpy.app.timers.is_registered(job_module.poll):
        interval = job_module.poll()
        ticks += 1
        if on_tick is not None:
            on_tick(ticks)
        if interval is None:
            bpy.app.timers.unregister(job_module.poll)
            break
        if time.monotonic() > deadline:
            raise SystemExit("the job did not finish in time")
        time.sleep(interval)
    return ticks


def strip_info(scene: object) -> list[dict]:
    editor = scene.sequence_editor
    strips = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    out = []
    for s in strips:
        start, end = (
            (s.left_handle, s.right_handle) if hasattr(s, "left_handle") else (s.frame_final_start, s.frame_final_end)
        )
        out.append(
            {
                "name": s.name,
                "type": s.type,
                "channel": s.channel,
                "start": int(start),
                "end": int(end),
                "filepath": getattr(s, "filepath", ""),
                "mute": s.mute,
            }
        )
    return out


def main() -> None:
    scenario, cfg = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    module = enable()
    job_module = sys.modules[f"{MODULE}.job"]
    scene = build_scene(cfg)
    view = scene.view_settings.view_transform
    report: dict = {"blender": bpy.app.version_string, "view_before": view}
    if scenario == "no_active":
        scene.sequence_editor.active_strip = None
    if scenario == "preview":
        scene.use_preview_range = True
        scene.frame_preview_start, scene.frame_preview_end = cfg["preview"]
        scene.kvlock.source_range = "PREVIEW"
    if scenario == "mask":  # a mask data-block: a square in the middle of the frame
        mask = bpy.data.masks.new("square")
        spline = mask.layers.new().splines.new()
        spline.points.add(3)
        for point, co in zip(spline.points, [(0.3, 0.3), (0.7, 0.3), (0.7, 0.7), (0.3, 0.7)], strict=True):
            point.co, point.handle_type = co, "VECTOR"
        spline.use_cyclic = True
        scene.kvlock.matte_kind, scene.kvlock.mask = "MASK", mask
    if scenario == "render_then_undo":
        bpy.ops.ed.undo_push(message="scene built")
    try:
        result = bpy.ops.sequencer.kvlock_render()
    except RuntimeError as exc:  # how bpy.ops hands a script the operator's ERROR report (the UI shows it)
        result, report["reported"] = {"CANCELLED"}, str(exc)
    report["operator"] = sorted(result)
    report["registered"] = bpy.app.timers.is_registered(job_module.poll)
    report["status_after_start"] = scene.kvlock.status
    if scenario == "cancel":

        def cancel_once(_ticks: int) -> None:
            job = job_module.ACTIVE
            progress = job.render.snapshot().progress if job is not None else None
            if progress is not None and progress.total_steps and not job.render.cancel.is_set():
                report["cancelled_at"] = scene.kvlock.step_text
                bpy.ops.sequencer.kvlock_cancel()

        report["ticks"] = pump(job_module, 300, cancel_once)
    elif report["registered"]:
        steps_seen: list[str] = []
        report["ticks"] = pump(job_module, 300, lambda _t: steps_seen.append(scene.kvlock.step_text))
        report["step_texts"] = sorted(set(steps_seen))
    report["status"] = scene.kvlock.status
    report["running"] = scene.kvlock.running
    report["strips"] = strip_info(scene)
    report["view_after"] = scene.view_settings.view_transform
    if scenario == "render_then_undo":
        report["place_options"] = sorted(bpy.types.SEQUENCER_OT_kvlock_place_result.bl_options)
        report["undo_available"] = bpy.ops.ed.undo.poll()
        if report["undo_available"]:
            report["undo"] = sorted(bpy.ops.ed.undo())
            report["strips_after_undo"] = strip_info(bpy.context.scene)
    del module
    print("KVLOCK-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
