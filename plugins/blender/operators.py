"""The panel's actions. Validation and frame gathering happen here, on the main thread, before any job starts."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import bpy
import numpy as np
from bpy.props import IntProperty, StringProperty

from kvlock_bridge import ArrayClip, AuthenticationError, BridgeError, Client, Params, ServerUnavailableError
from kvlock_bridge.background import BackgroundRender, unused_output
from kvlock_bridge.client import read_token

from . import job as jobs
from . import settings
from .compat import top_strips, visible_range
from .gather import render_frames, temporary_mask_strip
from .placement import SUFFIX, PlacementError, free_channel_above, output_folder

SOURCE_TYPES = {"MOVIE", "IMAGE"}
MATTE_TYPES = {"MOVIE", "IMAGE", "MASK"}


class UserError(Exception):
    """Something the editor can fix; shown in the panel as it is."""


def _prefs(context: Any) -> Any:
    return context.preferences.addons[__package__].preferences


def connect(context: Any) -> Client:
    """A client for the configured server, checked with one call (so a bad token shows up now)."""
    prefs = _prefs(context)
    host = prefs.address.rsplit(":", 1)[0].strip("[]")
    remote = host not in ("127.0.0.1", "localhost", "::1") and not prefs.address.startswith("unix:")
    if remote and not getattr(bpy.app, "online_access", True):
        raise UserError(
            f"the server {prefs.address} is on another computer and Blender's online access is off: "
            "allow it in Preferences › System › Network, or run `kvlock serve` on this computer"
        )
    token = read_token(prefs.token or None, prefs.token_file or None)
    client = Client(prefs.address, token, timeout=10.0)
    try:
        models = client.list_models()
    except ServerUnavailableError:
        client.close()
        raise UserError(
            f"KV-Lock server is not running at {prefs.address}: start it with `kvlock serve`, "
            "or set the address in the add-on preferences"
        ) from None
    except AuthenticationError as exc:
        client.close()
        raise UserError(f"the server refused the token ({exc}): copy it from the server's token file") from None
    except BridgeError as exc:
        client.close()
        raise UserError(str(exc)) from None
    offered = [(m.name, m.name, f"{m.family} · {m.status or m.location}") for m in models if m.loadable]
    settings.MODELS_CACHE[:] = offered or settings.MODELS_CACHE
    return client


def frame_rate(scene: Any) -> Fraction:
    return Fraction(round(scene.render.fps * 1000), round(scene.render.fps_base * 1000))


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "strip"


def source_range(scene: Any, strip: Any, props: Any) -> tuple[int, int]:
    start, end = visible_range(strip)
    if props.source_range == "PREVIEW":
        p_start, p_end = scene.frame_preview_start, scene.frame_preview_end + 1
        if p_start < start or p_end > end:
            raise UserError(
                f"the preview range {p_start}–{p_end - 1} reaches outside the strip's frames {start}–{end - 1}"
            )
        start, end = p_start, p_end
    return start, end


def gather_matte(scene: Any, props: Any, start: int, end: int) -> np.ndarray:
    """The matte rendered for exactly [start, end), as (T, H, W) uint8."""
    if props.matte_kind == "MASK":
        if props.mask is None:
            raise UserError("choose a mask data-block for the matte")
        with temporary_mask_strip(scene, props.mask, start, end) as strip:
            frames = render_frames(scene, strip, start, end)
    else:
        strip = top_strips(scene.sequence_editor).get(props.matte_strip) if props.matte_strip else None
        if strip is None:
            raise UserError("choose the matte strip (a mask, movie or image strip) in the KV-Lock panel")
        if strip.type not in MATTE_TYPES:
            raise UserError(f"{strip.name} is a {strip.type.lower()} strip; the matte must be a mask, movie or image")
        m_start, m_end = visible_range(strip)
        if m_start > start or m_end < end:
            raise UserError(
                f"matte length mismatch: {strip.name} covers frames {m_start}–{m_end - 1}, "
                f"the source needs {start}–{end - 1}"
            )
        frames = render_frames(scene, strip, start, end)
    return frames.max(axis=-1)  # a grey matte has R = G = B; a coloured one counts where any channel is lit


class SEQUENCER_OT_kvlock_refresh(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_refresh"
    bl_label = "Check Server"
    bl_description = "Connect to the KV-Lock server and list its models"

    def execute(self, context: Any) -> set[str]:
        props = context.scene.kvlock
        try:
            connect(context).close()
        except UserError as exc:
            props.connection = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        props.connection = f"connected: {len(settings.MODELS_CACHE)} model(s)"
        return {"FINISHED"}


class SEQUENCER_OT_kvlock_render(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_render"
    bl_label = "Render with KV-Lock"
    bl_description = "Edit the active strip's masked subject; the result lands on a free channel above"

    def execute(self, context: Any) -> set[str]:
        props = context.scene.kvlock
        try:
            job = self._prepare(context)
        except (UserError, PlacementError) as exc:
            props.status = f"Error: {exc}"
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        props.running, props.progress, props.step_text = True, 0.0, "uploading…"
        props.status = f"Rendering {job.placement.name} → {job.render.output.name}"
        jobs.start(job)
        return {"FINISHED"}

    def _prepare(self, context: Any) -> jobs.RunningJob:
        scene, props = context.scene, context.scene.kvlock
        if jobs.ACTIVE is not None:
            raise UserError("a KV-Lock render is already running: wait for it or cancel it")
        if not props.prompt.strip():
            raise UserError("write a prompt: what should the masked subject become?")
        editor = scene.sequence_editor
        strip = editor.active_strip if editor is not None else None
        if strip is None:
            raise UserError("no active strip: click the movie or image strip to edit")
        if strip.type not in SOURCE_TYPES:
            raise UserError(f"the active strip {strip.name} is a {strip.type.lower()} strip; choose a movie or image")
        start, end = source_range(scene, strip, props)
        folder = output_folder(bpy.data.filepath, bpy.path.abspath(props.output_dir) if props.output_dir else "")
        output = unused_output(folder, _safe_stem(strip.name), SUFFIX[props.codec])
        channel = free_channel_above(editor, strip.channel, start, end)
        client = connect(context)
        try:
            matte = gather_matte(scene, props, start, end)
            source = render_frames(scene, strip, start, end)
        except Exception:
            client.close()
            raise
        params = Params(
            prompt=props.prompt,
            model=props.model or "tiny",
            settings=props.edit_settings(),
            codec=props.codec,
            rate=frame_rate(scene),
        )
        placement = jobs.Placement(scene.name, f"{strip.name} KV-Lock", channel, start)
        render = BackgroundRender(client, ArrayClip(strip.name, source), ArrayClip("matte", matte), params, output)
        return jobs.RunningJob(render, placement)


class SEQUENCER_OT_kvlock_cancel(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running KV-Lock render (between denoising steps); nothing is placed"

    def execute(self, context: Any) -> set[str]:
        if jobs.ACTIVE is None:
            return {"CANCELLED"}
        jobs.ACTIVE.render.cancel.set()
        context.scene.kvlock.step_text = "cancelling…"
        return {"FINISHED"}


class SEQUENCER_OT_kvlock_place_result(bpy.types.Operator):
    """Adds the finished result as a movie strip; an operator so that Undo removes it."""

    bl_idname = "sequencer.kvlock_place_result"
    bl_label = "Place KV-Lock Result"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    scene: StringProperty()
    filepath: StringProperty(subtype="FILE_PATH")
    name: StringProperty()
    channel: IntProperty(min=1, max=128)
    frame_start: IntProperty()

    def execute(self, context: Any) -> set[str]:
        scene = bpy.data.scenes.get(self.scene)
        if scene is None or scene.sequence_editor is None:
            self.report({"ERROR"}, f"scene {self.scene} is gone; the result is at {self.filepath}")
            return {"CANCELLED"}
        strip = top_strips(scene.sequence_editor).new_movie(
            name=self.name, filepath=self.filepath, channel=self.channel, frame_start=self.frame_start
        )
        strip.select = True
        return {"FINISHED"}


CLASSES = (
    SEQUENCER_OT_kvlock_refresh,
    SEQUENCER_OT_kvlock_render,
    SEQUENCER_OT_kvlock_cancel,
    SEQUENCER_OT_kvlock_place_result,
)
