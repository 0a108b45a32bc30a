"""Sequencer › Sidebar › KV-Lock."""

from __future__ import annotations

from typing import Any

import bpy

from .compat import sequencer_scene


class SEQUENCER_PT_kvlock(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "KV-Lock"
    bl_label = "KV-Lock"

    def draw(self, context: Any) -> None:
        scene = sequencer_scene(context)
        props, layout = scene.kvlock, self.layout
        row = layout.row(align=True)
        row.label(text=props.connection, icon="URL")
        row.operator("sequencer.kvlock_refresh", text="", icon="FILE_REFRESH")
        layout.prop(props, "model")
        layout.prop(props, "task", expand=True)
        col = layout.column(align=True)
        col.prop(props, "prompt", text="Background" if props.task == "ERASE" else "Prompt")
        col.prop(props, "negative_prompt")
        col.prop(props, "source_prompt")
        layout.prop(props, "source_range")
        layout.prop(props, "matte_kind")
        if props.matte_kind == "MASK":
            layout.prop(props, "mask")
        elif scene.sequence_editor is not None:
            editor = scene.sequence_editor
            every = "strips_all" if hasattr(editor, "strips_all") else "sequences_all"  # 4.4+ / older
            layout.prop_search(props, "matte_strip", editor, every)
        col = layout.column(align=True)
        for name in ("strength", "steps", "seed", "takes", "guidance"):
            col.prop(props, name)
        box = layout.box()
        box.label(text="Lock")
        box.prop(props, "lock")
        if props.lock == "CUSTOM":
            for name in ("method", "kappa", "tau", "b", "alpha_early", "metric_window"):
                box.prop(props, name)
        box.prop(props, "feather")
        loras = layout.box()
        header = loras.row()
        header.label(text="LoRAs")
        header.operator("sequencer.kvlock_lora_add", text="", icon="ADD")
        for index, row in enumerate(props.loras):
            line = loras.row(align=True)
            line.prop(row, "lora", text="")
            line.prop(row, "weight", text="")
            line.operator("sequencer.kvlock_lora_remove", text="", icon="X").index = index
        layout.prop(props, "placement")
        if props.placement == "CHANNEL":
            layout.prop(props, "placement_channel")
        layout.prop(props, "output_dir")
        layout.prop(props, "codec")
        if props.running:
            layout.progress(factor=props.progress, text=props.step_text)
            layout.operator("sequencer.kvlock_cancel", icon="CANCEL")
        else:
            layout.operator("sequencer.kvlock_render", icon="RENDER_ANIMATION")
        if props.status:
            layout.label(text=props.status, icon="ERROR" if props.status.startswith("Error") else "INFO")
