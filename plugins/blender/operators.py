"""The panel's actions. Validation happens here, on the main thread, before any job starts; reading and
decoding media happens later, off it (see :mod:`.job`)."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from kvlock.settings import MAX_LORAS
from kvlock_bridge import AuthenticationError, BridgeError, Client, Params, ServerUnavailableError
from kvlock_bridge.background import unused_output
from kvlock_bridge.client import read_token

from . import job as jobs
from . import settings
from .colour import colour_plan, tag_space
from .compat import all_strips, content_start, sequencer_scene, top_strips, visible_range
from .media import MediaStrip
from .placement import SUFFIX, PlacementError, choose_channel, copy_look, free_channel, output_folder, shift_up
from .settings import PLACEMENT_ITEMS
from .snapshot import media_strip
from .timing import retime_problem

NO_EDIT_TYPES = {"SOUND"}  # strips without pictures


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
    try:
        loras = [(x.name, x.name, f"{x.family} · {x.base} · rank {x.rank}") for x in client.list_loras() if x.loadable]
    except BridgeError:  # a server without ListLoras offers none
        loras = []
    settings.LORAS_CACHE[:] = loras or [(settings.NO_LORA, "(none offered)", "the server lists no LoRA")]
    return client


def frame_rate(scene: Any) -> Fraction:
    """The scene's rate as an exact fraction (fps_base is a float: 1.001 means 24000/1001)."""
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


def _retimed_by_effect(editor: Any, strip: Any, start: int, end: int) -> str | None:
    for other in all_strips(editor):
        if other.type != "SPEED" or getattr(other, "input_1", None) != strip:
            continue
        s, e = visible_range(other)
        if s < end and start < e:
            return (
                f"{strip.name} is retimed by the speed effect {other.name}: the composition shows other frames than "
                "the strip's own; apply the edit before retiming, or render the retimed strip to a new file first"
            )
    return None


def _layer(editor: Any, strip: Any, role: str, start: int, end: int) -> Any:
    """The worker's description of a strip: its media, or a sequencer render of it."""
    problem = _retimed_by_effect(editor, strip, start, end)
    try:
        media = media_strip(strip)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if media is not None:
        problem = problem or retime_problem(strip.name, media.timing)
    if problem:
        raise UserError(problem)
    if strip.name not in top_strips(editor):  # inside a meta its place on the canvas is the meta's too
        raise UserError(
            f"the {role} {strip.name} sits inside a meta strip: choose the meta strip itself, or move the strip out"
        )
    if media is not None:
        return media
    return jobs.Rendered(strip.name, int(content_start(strip)))


def matte_layer(scene: Any, props: Any, source: Any, start: int, end: int) -> Any:
    """The matte for exactly [start, end): a mask data-block, or a strip (its media, else its render)."""
    editor = scene.sequence_editor
    if props.matte_kind == "MASK":
        if props.mask is None:
            raise UserError("choose a mask data-block for the matte")
        return jobs.MaskBlock(props.mask.name)
    strip = all_strips(editor).get(props.matte_strip) if props.matte_strip else None
    if strip is None:
        raise UserError("choose the matte strip (a mask, movie or image strip) in the KV-Lock panel")
    if strip.type in NO_EDIT_TYPES or strip == source:
        raise UserError(f"{strip.name} cannot be the matte: choose a mask, movie or image strip other than the source")
    m_start, m_end = visible_range(strip)
    if m_start > start or m_end < end:
        raise UserError(
            f"matte length mismatch: {strip.name} covers frames {m_start}–{m_end - 1}, "
            f"the source needs {start}–{end - 1}"
        )
    return _layer(editor, strip, "matte", start, end)


def _notes(editor: Any, strip: Any) -> tuple[str, ...]:
    """What the placed result does not carry over, so the editor is not surprised."""
    notes = []
    if strip.blend_type not in ("ALPHA_OVER", "REPLACE") or strip.blend_alpha < 1.0:
        blend = strip.bl_rna.properties["blend_type"].enum_items[strip.blend_type].name
        notes.append(
            f"{strip.name} blends ({blend}, {strip.blend_alpha:.0%}) with what is below it and the result takes the "
            f"same blend above it, so both show: mute {strip.name} to see the edit in its place"
        )
    if len(getattr(strip, "modifiers", ())):
        names = ", ".join(m.name for m in strip.modifiers)
        notes.append(f"the source's modifiers ({names}) are not on the result: copy them to it (Strip › Modifiers)")
    readers = [
        s.name
        for s in all_strips(editor)
        if strip in (getattr(s, "input_1", None), getattr(s, "input_2", None)) and s.type != "SPEED"
    ]
    if readers:
        notes.append(f"{', '.join(readers)} still read the original {strip.name}")
    return tuple(notes)


class SEQUENCER_OT_kvlock_refresh(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_refresh"
    bl_label = "Check Server"
    bl_description = "Connect to the KV-Lock server and list its models"

    def execute(self, context: Any) -> set[str]:
        props = sequencer_scene(context).kvlock
        try:
            connect(context).close()
        except UserError as exc:
            props.connection = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        props.connection = f"connected: {len(settings.MODELS_CACHE)} model(s)"
        return {"FINISHED"}


class SEQUENCER_OT_kvlock_lora_add(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_lora_add"
    bl_label = "Add LoRA"
    bl_description = "Apply one more LoRA the server offers (Check Server lists them)"

    def execute(self, context: Any) -> set[str]:
        props = sequencer_scene(context).kvlock
        if len(props.loras) >= MAX_LORAS:
            self.report({"ERROR"}, f"at most {MAX_LORAS} LoRAs apply to one edit")
            return {"CANCELLED"}
        props.loras.add()
        return {"FINISHED"}


class SEQUENCER_OT_kvlock_lora_remove(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_lora_remove"
    bl_label = "Remove LoRA"
    bl_description = "Stop applying this LoRA"

    index: IntProperty(default=0, min=0)

    def execute(self, context: Any) -> set[str]:
        props = sequencer_scene(context).kvlock
        if self.index < len(props.loras):
            props.loras.remove(self.index)
        return {"FINISHED"}


class SEQUENCER_OT_kvlock_render(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_render"
    bl_label = "Render with KV-Lock"
    bl_description = "Edit the active strip's masked subject; the result lands directly above it"

    placement: EnumProperty(name="Placement", items=PLACEMENT_ITEMS, default="ABOVE")
    channel: IntProperty(name="Channel", min=1, max=128, default=2)
    conflict: StringProperty(options={"SKIP_SAVE", "HIDDEN"})

    def invoke(self, context: Any, event: Any) -> set[str]:
        """From the UI: when the channel above is taken, ask where the result should go."""
        scene = sequencer_scene(context)
        props = scene.kvlock
        self.placement, self.channel = props.placement, props.placement_channel
        strip = scene.sequence_editor.active_strip if scene.sequence_editor is not None else None
        if strip is not None and jobs.ACTIVE is None:
            try:
                start, end = source_range(scene, strip, props)
                choose_channel(scene.sequence_editor, strip.channel, start, end, self.placement, self.channel)
            except PlacementError as exc:
                self.conflict = str(exc)
                return context.window_manager.invoke_props_dialog(self, width=480)
            except UserError:
                pass  # execute says it
        return self.execute(context)

    def draw(self, _context: Any) -> None:
        col = self.layout.column()
        for line in re.findall(r".{1,70}(?:\s|$)", self.conflict):
            col.label(text=line.strip())
        col.prop(self, "placement")
        if self.placement == "CHANNEL":
            col.prop(self, "channel")

    def execute(self, context: Any) -> set[str]:
        scene = sequencer_scene(context)
        props = scene.kvlock
        if self.properties.is_property_set("placement"):
            props.placement, props.placement_channel = self.placement, self.channel
        try:
            job = self._prepare(context, scene)
        except (UserError, PlacementError) as exc:
            props.status = f"Error: {exc}"
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        props.running, props.progress, props.step_text = True, 0.0, "reading the media…"
        props.status = f"Rendering {job.placement.name} → {job.output.name}"
        jobs.start(job)
        return {"FINISHED"}

    def _prepare(self, context: Any, scene: Any) -> jobs.Job:
        props = scene.kvlock
        if jobs.ACTIVE is not None:
            raise UserError("a KV-Lock render is already running: wait for it or cancel it")
        if props.task == "EDIT" and not props.prompt.strip():
            raise UserError("write a prompt: what should the masked subject become? (or choose Erase)")
        editor = scene.sequence_editor
        strip = editor.active_strip if editor is not None else None
        if strip is None:
            raise UserError("no active strip: click the movie or image strip to edit")
        if strip.type in NO_EDIT_TYPES:
            raise UserError(f"the active strip {strip.name} is a sound strip; choose one with pictures")
        start, end = source_range(scene, strip, props)
        source = _layer(editor, strip, "source", start, end)
        matte = matte_layer(scene, props, strip, start, end)
        # checked now so a taken channel is said before any work; chosen again when the result is placed
        choose_channel(editor, strip.channel, start, end, props.placement, props.placement_channel)
        colour = colour_plan(scene, strip, source.files[0] if isinstance(source, MediaStrip) else None, props.codec)
        folder = output_folder(bpy.data.filepath, bpy.path.abspath(props.output_dir) if props.output_dir else "")
        params = Params(
            prompt=props.prompt,
            model=props.model or "tiny",
            settings=props.edit_settings(),
            codec=colour.codec,
            rate=frame_rate(scene),
        )
        output = unused_output(folder, _safe_stem(strip.name), SUFFIX[colour.codec], params)
        render = scene.render
        plan = jobs.Plan(
            scene=scene.name,
            start=start,
            end=end,
            canvas=(render.resolution_x, render.resolution_y),
            scene_rate=frame_rate(scene),
            source=source,
            matte=matte,
            colour=colour,
        )
        placement = jobs.Placement(
            scene=scene.name,
            name=f"{strip.name} KV-Lock",
            source=strip.name,
            source_channel=strip.channel,
            start=start,
            end=end,
            mode=props.placement,
            picked=props.placement_channel,
            copy_look=not isinstance(source, jobs.Rendered),
            colour_space=colour.output_space,
            notes=_notes(editor, strip) + ((colour.note,) if colour.linear and colour.codec != "exr" else ()),
        )
        client = connect(context)
        return jobs.Job(client, plan, params, output, placement)


class SEQUENCER_OT_kvlock_cancel(bpy.types.Operator):
    bl_idname = "sequencer.kvlock_cancel"
    bl_label = "Cancel"
    bl_description = (
        "Stop the running KV-Lock render (between frames or denoising steps); only takes already finished are placed"
    )

    def execute(self, context: Any) -> set[str]:
        if jobs.ACTIVE is None:
            return {"CANCELLED"}
        jobs.ACTIVE.cancel.set()
        sequencer_scene(context).kvlock.step_text = "cancelling…"
        return {"FINISHED"}


def add_result(editor: Any, name: str, path: str, channel_number: int, start: int) -> Any:
    """The result as a movie strip, or as an image strip of its numbered files when it is a folder (EXR)."""
    strips, folder = top_strips(editor), Path(path)
    where = {"name": name, "channel": channel_number, "frame_start": start, "fit_method": "ORIGINAL"}
    if not folder.is_dir():
        return strips.new_movie(filepath=path, **where)
    files = sorted(folder.iterdir(), key=lambda f: (len(f.name), f.name))  # NAME.1001.exr …: by number
    strip = strips.new_image(filepath=str(files[0]), **where)
    for file in files[1:]:
        strip.elements.append(file.name)
    return strip


class SEQUENCER_OT_kvlock_place_result(bpy.types.Operator):
    """Adds the finished result as a movie (or EXR image) strip; an operator so that Undo removes it (and any
    shift)."""

    bl_idname = "sequencer.kvlock_place_result"
    bl_label = "Place KV-Lock Result"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    scene: StringProperty()
    filepath: StringProperty(subtype="FILE_PATH")
    name: StringProperty()
    source: StringProperty()
    source_channel: IntProperty(min=1, max=128)
    frame_start: IntProperty()
    frame_end: IntProperty()
    placement: EnumProperty(items=PLACEMENT_ITEMS, default="ABOVE")
    channel: IntProperty(min=1, max=128, default=2)
    copy_look: BoolProperty(default=True, description="the source has media: take its transform too")
    colour_space: StringProperty(description="the result's colour space (its pixels are in the source's)")
    notes: StringProperty()
    takes: StringProperty(description="the other takes' files, a JSON list: muted on the channels above the first")
    take_count: IntProperty(default=1, min=1, description="how many takes the job was asked for (names by take)")
    outcome: StringProperty(description="what the render said, when it stopped early (a cancel after some takes)")

    def execute(self, context: Any) -> set[str]:
        scene = bpy.data.scenes.get(self.scene)
        if scene is None or scene.sequence_editor is None:
            self.report({"ERROR"}, f"scene {self.scene} is gone; the result is at {self.filepath}")
            return {"CANCELLED"}
        props, editor = scene.kvlock, scene.sequence_editor
        source = top_strips(editor).get(self.source)
        below = source.channel if source is not None else self.source_channel
        try:
            start, end = self.frame_start, self.frame_end
            number, shift = choose_channel(editor, below, start, end, self.placement, self.channel)
            if shift:
                shift_up(editor, below)
        except PlacementError as exc:
            props.status = f"Error: {exc}; the result is saved at {self.filepath}"
            self.report({"ERROR"}, props.status)
            return {"CANCELLED"}
        others = json.loads(self.takes) if self.takes else []
        name = f"{self.name} take 1" if self.take_count > 1 else self.name
        strip = add_result(editor, name, self.filepath, number, self.frame_start)
        if source is not None:
            copy_look(source, strip, media=self.copy_look)
        tagged = not self.colour_space or tag_space(strip, self.colour_space)
        strip.select = True
        props.placed_channel = number
        placed = visible_range(strip)
        props.status = f"Done: {bpy.path.basename(self.filepath)} on channel {number}"
        if others:
            said, takes_tagged = self._place_takes(editor, source, number, others)
            props.status += f"; {said}"
            tagged = tagged and takes_tagged
        if placed != (self.frame_start, self.frame_end):
            props.status += (
                f"; Blender placed it over frames {placed[0]}–{placed[1] - 1}, not {self.frame_start}–"
                f"{self.frame_end - 1}: check the movie's and the scene's frame rates"
            )
        if not tagged:
            props.status += (
                f"; Blender has no colour space {self.colour_space}: set the result's Color Space to the source's"
            )
        if self.notes:
            props.status += f"; note: {self.notes}"
        if self.outcome:
            props.status = f"Cancelled: {self.outcome}; " + props.status.removeprefix("Done: ")
        return {"FINISHED"}

    def _place_takes(self, editor: Any, source: Any, first: int, paths: list[str]) -> tuple[str, bool]:
        """Takes 2… muted on the free channels above take 1, named by take, in this one undo step; what to
        say, and whether every take took the colour space."""
        channels, tagged, lowest, last = [], True, first + 1, len(paths) + 1
        for take, path in enumerate(paths, 2):
            number = free_channel(editor, lowest, self.frame_start, self.frame_end)
            if number is None:
                rest = ", ".join(paths[take - 2 :])
                return f"takes {take}–{last} found no free channel above and are saved at {rest}", tagged
            strip = add_result(editor, f"{self.name} take {take}", path, number, self.frame_start)
            if source is not None:
                copy_look(source, strip, media=self.copy_look)
            tagged = tagged and (not self.colour_space or tag_space(strip, self.colour_space))
            strip.mute = True
            channels.append(number)
            lowest = number + 1
        where = ", ".join(str(c) for c in channels)
        return f"takes 2–{last} muted on channel{'s' * (len(channels) > 1)} {where} (unmute one to compare)", tagged


CLASSES = (
    SEQUENCER_OT_kvlock_refresh,
    SEQUENCER_OT_kvlock_lora_add,
    SEQUENCER_OT_kvlock_lora_remove,
    SEQUENCER_OT_kvlock_render,
    SEQUENCER_OT_kvlock_cancel,
    SEQUENCER_OT_kvlock_place_result,
)
