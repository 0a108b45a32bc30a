"""Drives the KV-Lock add-on inside real Blender-as-a-module (run by a bpy venv's Python, not by pytest).

    python tests/support/blender_driver.py SCENARIO CONFIG.json  → prints one JSON line with what happened

The config describes a scene (size, rate, start frame, colour settings), its strips (movies, image
sequences, colour, text, mask and meta strips with handles, hold offsets, transforms, crops, blends, mutes),
its channels and the panel's settings. Blender-as-a-module has no event loop, so nothing fires
``bpy.app.timers``: this driver stands in for it and calls the add-on's registered timer function on its
schedule until the function ends itself, exactly as Blender's loop would, timing every call (the time the
main thread is busy). The add-on is loaded as an extension from a user repository that links to
``plugins/blender``; its Python dependencies come from PYTHONPATH (the zip bundles them instead).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import importlib
import json
import sys
import time
import warnings
from pathlib import Path

import bpy
import numpy as np

MODULE = "bl_ext.user_default.kvlock"
warnings.simplefilter("ignore", DeprecationWarning)  # 5.2 deprecates frame_* names; the driver reads both


def enable() -> object:
    addon_utils = importlib.import_module("addon_utils")  # importable only once bpy has set up its paths
    module = addon_utils.enable(MODULE, default_set=True, handle_error=None)
    if module is None:
        raise SystemExit(f"could not enable {MODULE}")
    return module


def _set(owner, **values) -> None:
    for name, value in values.items():
        if hasattr(owner, name):
            setattr(owner, name, value)


def handles(strip) -> tuple[int, int]:
    if hasattr(strip, "left_handle"):
        return int(strip.left_handle), int(strip.right_handle)
    return int(strip.frame_final_start), int(strip.frame_final_end)


def set_handles(strip, left: int, right: int) -> None:
    if hasattr(strip, "left_handle"):
        strip.left_handle, strip.right_handle = left, right
    else:
        strip.frame_final_start, strip.frame_final_end = left, right


def content(strip) -> dict:
    start = strip.content_start if hasattr(strip, "content_start") else strip.frame_start
    if hasattr(strip, "content_trim_start"):
        trim = (strip.content_trim_start, strip.content_trim_end)
    else:
        trim = (getattr(strip, "animation_offset_start", 0), getattr(strip, "animation_offset_end", 0))
    return {"content_start": float(start), "trim": [int(trim[0]), int(trim[1])]}


def build_masks(cfg: dict) -> None:
    for name, corners in cfg.get("masks", {}).items():
        mask = bpy.data.masks.new(name)
        spline = mask.layers.new().splines.new()
        spline.points.add(len(corners) - 1)
        for point, co in zip(spline.points, corners, strict=True):
            point.co, point.handle_type = co, "VECTOR"
        spline.use_cyclic = True


def add_strip(scene, strips, spec: dict, by_name: dict):
    kind, name, channel, start = spec["kind"], spec["name"], spec["channel"], spec.get("start", 1)
    fit = spec.get("fit", "ORIGINAL")
    if kind == "movie":
        strip = strips.new_movie(name=name, filepath=spec["path"], channel=channel, frame_start=start, fit_method=fit)
    elif kind == "image":
        files = spec["files"]
        strip = strips.new_image(name=name, filepath=files[0], channel=channel, frame_start=start, fit_method=fit)
        for path in files[1:]:
            strip.elements.append(Path(path).name)
    elif kind in ("color", "text"):
        length = spec["length"]
        strip = strips.new_effect(name=name, type=kind.upper(), channel=channel, frame_start=start, length=length)
        if kind == "color":
            strip.color = spec.get("color", (0.2, 0.4, 0.6))
        else:
            strip.text = spec.get("text", "title")
    elif kind == "mask":
        strip = strips.new_mask(name=name, mask=bpy.data.masks[spec["mask"]], channel=channel, frame_start=start)
    elif kind == "speed":
        target = by_name[spec["of"]]
        extra = {"length": spec["length"]} if bpy.app.version < (5, 2) else {}
        strip = strips.new_effect(name=name, type="SPEED", channel=channel, frame_start=start, input1=target, **extra)
    elif kind == "meta":
        inner = [add_strip(scene, strips, s, by_name) for s in spec["inner"]]
        strip = strips.new_meta(name=name, channel=channel, frame_start=start)
        for s in inner:
            s.move_to_meta(strip)
        strip.channel = channel
        set_handles(strip, min(handles(s)[0] for s in inner), max(handles(s)[1] for s in inner))
    else:
        raise SystemExit(f"unknown strip kind {kind}")
    if "trim" in spec:
        _set(strip, animation_offset_start=spec["trim"][0], animation_offset_end=spec["trim"][1])
        if "content_start" in spec:
            strip.frame_start = spec["content_start"]
    if "handles" in spec:
        set_handles(strip, *spec["handles"])
    if "transform" in spec:
        for key, value in spec["transform"].items():
            setattr(strip.transform, key, value)
    if "crop" in spec:
        strip.crop.min_x, strip.crop.max_x, strip.crop.min_y, strip.crop.max_y = spec["crop"]
    if "flip" in spec:
        strip.use_flip_x, strip.use_flip_y = spec["flip"]
    for key in ("blend_type", "blend_alpha", "mute", "strobe", "use_reverse_frames", "color_saturation"):
        if key in spec:
            setattr(strip, key, spec[key])
    if "colorspace" in spec:
        strip.colorspace_settings.name = spec["colorspace"]
    if "retime_key" in spec:
        strip.retiming_keys.add(timeline_frame=spec["retime_key"])
    by_name[name] = strip
    return strip


def build_scene(cfg: dict):
    scene = bpy.context.scene
    s = cfg.get("scene", {})
    render = scene.render
    render.resolution_x, render.resolution_y = s.get("width", 96), s.get("height", 96)
    render.fps, render.fps_base = s.get("fps", [24, 1.0])
    scene.frame_start, scene.frame_end = s.get("frame_start", 1), s.get("frame_end", 250)
    scene.frame_current = s.get("frame_start", 1)
    view = scene.view_settings
    view.view_transform = s.get("view", "AgX")  # the add-on must render neutrally and put all this back
    if s.get("look"):
        view.look = "AgX - Punchy"
    view.exposure, view.gamma = s.get("exposure", 0.0), s.get("gamma", 1.0)
    if s.get("white_balance"):
        view.use_white_balance, view.white_balance_temperature = True, s["white_balance"]
    if s.get("override"):
        render.image_settings.color_management = "OVERRIDE"
        render.image_settings.view_settings.view_transform = "Filmic"
        render.image_settings.view_settings.exposure = 1.5
    if s.get("sequencer_space"):
        scene.sequencer_colorspace_settings.name = s["sequencer_space"]
    build_masks(cfg)
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    by_name: dict = {}
    for spec in cfg.get("strips", []):
        add_strip(scene, strips, spec, by_name)
    for number, values in cfg.get("channels", {}).items():
        for key, value in values.items():
            setattr(editor.channels[int(number)], key, value)
    editor.active_strip = by_name.get(cfg.get("active", "shot"))
    props = scene.kvlock
    props.prompt = "a red cube"
    props.output_dir = cfg["out"]
    props.steps = cfg.get("steps", 3)
    props.seed = 7
    for key, value in cfg.get("props", {"matte_strip": "matte"}).items():
        setattr(props, key, bpy.data.masks[value] if key == "mask" else value)
    if "preview" in cfg:
        scene.use_preview_range = True
        scene.frame_preview_start, scene.frame_preview_end = cfg["preview"]
        props.source_range = "PREVIEW"
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.address, prefs.token = cfg["address"], cfg["token"]
    return scene


# -- what the composition is, before and after ------------------------------------------------------------


def strip_info(scene) -> list[dict]:
    editor = scene.sequence_editor
    strips = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    out = []
    for s in strips:
        start, end = handles(s)
        info = {
            "name": s.name,
            "type": s.type,
            "channel": s.channel,
            "start": start,
            "end": end,
            "filepath": getattr(s, "filepath", ""),
            "mute": s.mute,
            "lock": s.lock,
            "blend": [s.blend_type, round(s.blend_alpha, 6)],
        } | content(s)
        if hasattr(s, "colorspace_settings"):
            info["colorspace"] = s.colorspace_settings.name
        if s.type == "IMAGE":
            info["files"] = [str(Path(bpy.path.abspath(s.directory)) / e.filename) for e in s.elements]
        if hasattr(s, "transform"):
            t, c = s.transform, s.crop
            info["transform"] = [t.offset_x, t.offset_y, t.scale_x, t.scale_y, t.rotation, *t.origin, t.filter]
            info["crop"] = [c.min_x, c.max_x, c.min_y, c.max_y]
            info["flip"] = [s.use_flip_x, s.use_flip_y]
        out.append(info)
    return out


def channel_info(scene) -> list[list]:
    return [[c.name, c.mute, c.lock] for c in list(scene.sequence_editor.channels)[1:12]]


def scene_info(scene) -> dict:
    view, render, image = scene.view_settings, scene.render, scene.render.image_settings
    names = ("view_transform", "look", "exposure", "gamma", "use_curve_mapping", "use_white_balance")
    out = {n: getattr(view, n) for n in names if hasattr(view, n)}
    out["white_balance_temperature"] = getattr(view, "white_balance_temperature", None)
    out["display"] = scene.display_settings.display_device
    for n in ("resolution_x", "resolution_y", "resolution_percentage", "fps", "fps_base", "filepath", "use_sequencer"):
        out[n] = getattr(render, n)
    out |= {n: getattr(render, n) for n in ("use_compositing", "dither_intensity", "use_stamp", "use_border")}
    out |= {n: getattr(image, n) for n in ("file_format", "color_mode", "color_depth", "color_management")}
    override = image.view_settings
    out["override"] = [override.view_transform, override.look, override.exposure, override.gamma]
    out["sequencer_space"] = scene.sequencer_colorspace_settings.name
    out["frame_current"] = scene.frame_current
    out["scenes"] = sorted(s.name for s in bpy.data.scenes)
    return out


def render_composition(scene, frame: int, path: Path) -> str:
    """The composition as the editor sees it at ``frame`` (neutral colour, so pixels compare), saved as .npy.

    Uses the add-on's own neutral settings (checked by the tests of scene state), without its solo."""
    neutral_render = sys.modules[f"{MODULE}.sequencer_render"].neutral_render
    current, filepath = scene.frame_current, scene.render.filepath
    with neutral_render(scene):
        try:
            scene.frame_set(frame)
            scene.render.filepath = str(path.with_suffix(".png"))
            bpy.ops.render.render(write_still=True)
        finally:
            scene.frame_set(current)
    png = bpy.data.images.load(str(path.with_suffix(".png")), check_existing=False)
    w, h = png.size
    buffer = np.empty(w * h * 4, np.float32)
    png.pixels.foreach_get(buffer)
    bpy.data.images.remove(png)
    np.save(path, np.rint(buffer.reshape(h, w, 4)[::-1, :, :3] * 255).astype(np.uint8))
    assert scene.render.filepath == filepath
    return str(path)


# -- pressing the buttons ------------------------------------------------------------------------------------


def press_render(report: dict, **options) -> set:
    began = time.perf_counter()
    try:
        result = bpy.ops.sequencer.kvlock_render(**options)
    except RuntimeError as exc:  # how bpy.ops hands a script the operator's ERROR report (the UI shows it)
        result, report["reported"] = {"CANCELLED"}, str(exc)
    report.setdefault("main_thread_ms", []).append(1000 * (time.perf_counter() - began))
    return result


def pump(job_module, report: dict, timeout: float, on_tick=None) -> None:
    """Call the registered timer like Blender's loop, timing each call; return when it ends itself."""
    deadline = time.monotonic() + timeout
    while bpy.app.timers.is_registered(job_module.poll):
        before = bpy.context.scene.kvlock.step_text
        began = time.perf_counter()
        interval = job_module.poll()
        spent = 1000 * (time.perf_counter() - began)
        report.setdefault("main_thread_ms", []).append(spent)
        if spent > 50:  # what the job was doing when the main thread was held longest
            report.setdefault("slow_ticks", []).append([round(spent), before, bpy.context.scene.kvlock.step_text])
        report["ticks"] = report.get("ticks", 0) + 1
        if on_tick is not None:
            on_tick()
        if interval is None:
            bpy.app.timers.unregister(job_module.poll)
            break
        if time.monotonic() > deadline:
            raise SystemExit("the job did not finish in time")
        time.sleep(interval)


def run_job(scene, job_module, report: dict, options: dict | None = None, timeout: float = 300) -> None:
    result = press_render(report, **(options or {}))
    report["operator"] = sorted(result)
    report["registered"] = bpy.app.timers.is_registered(job_module.poll)
    if report["registered"]:
        seen: list[str] = []
        pump(job_module, report, timeout, lambda: seen.append(scene.kvlock.step_text))
        report["step_texts"] = sorted(set(seen))
    report["status"] = scene.kvlock.status


# -- scenarios -----------------------------------------------------------------------------------------------


def count_placements(report: dict) -> None:
    """Count the place operator's runs (each is one undo step): its Python ``execute``, wrapped."""
    place = sys.modules[f"{MODULE}.operators"].SEQUENCER_OT_kvlock_place_result
    execute = place.execute
    report["placements"] = 0

    def counted(self, context):
        report["placements"] += 1
        return execute(self, context)

    place.execute = counted


def scenario_render(scene, job_module, cfg: dict, report: dict) -> None:
    out = Path(cfg["out"]).parent
    count_placements(report)
    frames = cfg.get("compare_frames", [])
    before = [render_composition(scene, f, out / f"before_{f}.npy") for f in frames]
    if cfg.get("undo"):
        bpy.ops.ed.undo_push(message="scene built")
    run_job(scene, job_module, report)
    after = [render_composition(scene, f, out / f"after_{f}.npy") for f in frames]
    report["compare"] = [list(pair) for pair in zip(before, after, strict=True)]
    if cfg.get("undo"):
        report["place_options"] = sorted(bpy.types.SEQUENCER_OT_kvlock_place_result.bl_options)
        report["undo_available"] = bpy.ops.ed.undo.poll()
        if report["undo_available"]:
            report["undo"] = sorted(bpy.ops.ed.undo())
            report["strips_after_undo"] = strip_info(bpy.context.scene)


def scenario_cancel(scene, job_module, cfg: dict, report: dict) -> None:
    """Cancel once the job shows denoising steps, or (``cancel_while`` set) once the step line has those words."""

    def cancel_once() -> None:
        job = job_module.ACTIVE
        if job is None or job.cancel.is_set():
            return
        if "cancel_while" in cfg:
            due = cfg["cancel_while"] in scene.kvlock.step_text
        else:
            progress = job.render.snapshot().progress if job.render is not None else None
            due = progress is not None and progress.denoising is not None
        if due:
            report["cancelled_at"] = scene.kvlock.step_text
            bpy.ops.sequencer.kvlock_cancel()

    report["operator"] = sorted(press_render(report))
    pump(job_module, report, 300, cancel_once)
    report["status"] = scene.kvlock.status


def scenario_occupied(scene, job_module, cfg: dict, report: dict) -> None:
    """Directly above is taken: refused with the reason; a picked channel that is taken too; then a shift."""
    report["first"] = sorted(press_render(report))
    report["first_status"] = scene.kvlock.status
    report["picked"] = sorted(press_render(report, placement="CHANNEL", channel=cfg["taken_pick"]))
    report["picked_status"] = scene.kvlock.status
    run_job(scene, job_module, report, {"placement": "SHIFT"})


def scenario_refusals(scene, job_module, cfg: dict, report: dict) -> None:
    """Each case changes the scene, presses Render, records what the editor is told, and changes it back."""
    shot = scene.sequence_editor.active_strip
    editor = scene.sequence_editor
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    results = {}

    def attempt(label: str) -> None:
        local: dict = {}
        run_job(scene, job_module, local)
        results[label] = [local["operator"], local["status"], local.get("reported", "")]
        scene.kvlock.status = ""

    shot.strobe = 2.0
    attempt("strobe")
    shot.strobe = 1.0
    shot.use_reverse_frames = True
    attempt("reverse")
    shot.use_reverse_frames = False
    start, end = handles(shot)
    extra = {"length": end - start} if bpy.app.version < (5, 2) else {}
    speed = strips.new_effect(name="speed", type="SPEED", channel=6, frame_start=start, input1=shot, **extra)
    attempt("speed")
    strips.remove(speed)
    key = shot.retiming_keys.add(timeline_frame=start + 2)
    attempt("retimed")
    shot.retiming_keys.reset()
    del key
    shot.stream_index = 1
    attempt("stream")
    shot.stream_index = 0
    editor.active_strip = strips["title"]
    attempt("transparent")
    report["refusals"] = results


def scenario_agrees(scene, job_module, cfg: dict, report: dict) -> None:
    """Blender's own render against the add-on's frame map and placement maths, strip by strip."""
    timing = sys.modules[f"{MODULE}.timing"]
    geometry = sys.modules[f"{MODULE}.geometry"]
    snapshot = sys.modules[f"{MODULE}.snapshot"]
    compat = sys.modules[f"{MODULE}.compat"]
    out = Path(cfg["out"]).parent
    editor = scene.sequence_editor
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    checks = {}
    for spec in cfg["frame_checks"]:  # which media frame Blender shows at each timeline frame
        strip = strips[spec["strip"]]
        solo = [(s, s.mute) for s in strips]
        for s in strips:
            s.mute = s != strip
        t = snapshot.timing_of(strip)
        length = spec["media_frames"] - t.trim_start - t.trim_end
        left, right = compat.visible_range(strip)
        expected = timing.media_indices(t, length, left, right)
        shown = []
        for frame in range(left, right):
            pixels = np.load(render_composition(scene, frame, out / "frame.npy"))
            shown.append(int(pixels[0, 0, 0]))  # the media frame's number, written into its first pixel
        checks[spec["strip"]] = {"expected": expected, "shown": shown}
        for s, muted in solo:
            s.mute = muted
    report["frames"] = checks
    placements = {}
    for spec in cfg["geometry_checks"]:  # where Blender puts the strip's pixels on the canvas
        strip = strips[spec["strip"]]
        for s in strips:
            s.mute = s != strip
        look = snapshot.look_of(strip)
        media = np.load(spec["media"])
        g = dataclasses.replace(look, width=media.shape[1], height=media.shape[0])
        canvas = (scene.render.resolution_x, scene.render.resolution_y)
        matrix = np.linalg.inv(geometry.image_to_canvas(g, canvas))
        predicted = geometry.sample(media, matrix, canvas, g.crop, nearest=True)
        frame = compat.visible_range(strip)[0]
        rendered = render_composition(scene, frame, out / f"geometry_{spec['strip']}.npy")
        np.save(out / f"predicted_{spec['strip']}.npy", np.rint(predicted).astype(np.uint8))
        placements[spec["strip"]] = [rendered, str(out / f"predicted_{spec['strip']}.npy")]
    report["geometry"] = placements


def scenario_loras(scene, job_module, cfg: dict, report: dict) -> None:
    """Check Server fills the LoRA menu from ListLoras; the panel's rows (added, set, one removed again) go out
    with the render."""
    report["refresh"] = sorted(bpy.ops.sequencer.kvlock_refresh())
    report["offered"] = [item[0] for item in sys.modules[f"{MODULE}.settings"].LORAS_CACHE]
    props = scene.kvlock
    for name, weight in cfg["loras"]:
        bpy.ops.sequencer.kvlock_lora_add()
        props.loras[-1].lora, props.loras[-1].weight = name, weight
    bpy.ops.sequencer.kvlock_lora_add()
    bpy.ops.sequencer.kvlock_lora_remove(index=len(props.loras) - 1)
    report["rows"] = [[row.lora, row.weight] for row in props.loras]
    report["sent"] = props.edit_settings().get("loras")
    run_job(scene, job_module, report)


SCENARIOS = {
    "loras": scenario_loras,
    "render": scenario_render,
    "cancel": scenario_cancel,
    "occupied": scenario_occupied,
    "refusals": scenario_refusals,
    "agrees": scenario_agrees,
}


def main() -> None:
    faulthandler.enable(all_threads=True)  # a crash in Blender or a decoder shows every thread's stack
    scenario, cfg = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    module = enable()
    job_module = sys.modules[f"{MODULE}.job"]
    scene = build_scene(cfg)
    report: dict = {
        "blender": bpy.app.version_string,
        "strips_before": strip_info(scene),
        "channels_before": channel_info(scene),
        "scene_before": scene_info(scene),
    }
    if cfg.get("no_active"):
        scene.sequence_editor.active_strip = None
    SCENARIOS[scenario](scene, job_module, cfg, report)
    report["running"] = scene.kvlock.running
    report["strips"] = strip_info(scene)
    report["channels"] = channel_info(scene)
    report["scene_after"] = scene_info(scene)
    del module
    print("KVLOCK-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
