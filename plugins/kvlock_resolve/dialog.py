"""The Workspace › Scripts dialog, built with Fusion's UIManager; all logic lives in :mod:`.controller`.

A UIManager timer polls the running job, so the dialog stays responsive and Cancel works at any time.
"""

from __future__ import annotations

from typing import Any

from kvlock_wire import DEFAULT_ADDRESS, default_token_file

from . import host
from .controller import Controller, Form

MATTES = [("above", "Matte clip on the track above"), ("clip", "Clip matte of the source clip"), ("file", "Matte file")]
NUMBERS = [  # id, label, kind, default, min, max
    ("Strength", "Strength", "float", 1.0, 0.01, 1.0),
    ("Steps", "Steps (0: model default)", "int", 0, 0, 500),
    ("Seed", "Seed", "int", 0, 0, 2**31 - 1),
    ("Guidance", "Guidance (0: model default)", "float", 0.0, 0.0, 30.0),
    ("Kappa", "Control steps κ", "int", 20, 0, 500),
    ("Tau", "Threshold τ", "float", 0.01, 1e-6, 10.0),
    ("B", "Guidance ceiling b", "float", 2.0, 1.0, 10.0),
    ("AlphaEarly", "Early α", "float", 1.0, 0.0, 1.0),
]


def _row(ui: Any, label: str, widget: Any) -> Any:
    return ui.HGroup({"Weight": 0}, [ui.Label({"Text": label, "Weight": 0.35}), widget])


def _buttons(ui: Any, *specs: tuple[str, str]) -> Any:
    return ui.HGroup({"Weight": 0}, [ui.Button({"ID": ident, "Text": text}) for ident, text in specs])


def build_window(ui: Any, disp: Any) -> Any:
    numbers = []
    for ident, label, kind, default, lo, hi in NUMBERS:
        spin = ui.DoubleSpinBox if kind == "float" else ui.SpinBox
        numbers.append(_row(ui, label, spin({"ID": ident, "Value": default, "Minimum": lo, "Maximum": hi})))
    return disp.AddWindow(
        {"ID": "KVLock", "WindowTitle": "KV-Lock", "Geometry": [200, 200, 460, 640]},
        ui.VGroup(
            [
                ui.Label({"ID": "Product", "Text": ""}),
                _row(ui, "Server", ui.LineEdit({"ID": "Address", "Text": DEFAULT_ADDRESS})),
                _row(ui, "Token", ui.LineEdit({"ID": "Token", "Text": "", "EchoMode": "Password"})),
                ui.Label({"ID": "Server", "Text": "not checked"}),
                _buttons(ui, ("Check", "Check server")),
                _row(ui, "Prompt", ui.LineEdit({"ID": "Prompt", "PlaceholderText": "what the subject should become"})),
                _row(ui, "Negative", ui.LineEdit({"ID": "Negative"})),
                _row(ui, "Source", ui.LineEdit({"ID": "SourcePrompt", "PlaceholderText": "what the clip shows now"})),
                *numbers,
                _row(ui, "Matte", ui.ComboBox({"ID": "Matte"})),
                _row(ui, "Matte file", ui.LineEdit({"ID": "MatteFile"})),
                _row(ui, "Output folder", ui.LineEdit({"ID": "Output", "PlaceholderText": "media folder/KV-Lock"})),
                _buttons(ui, ("Render", "Render"), ("Cancel", "Cancel")),
                ui.Label({"ID": "Progress", "Text": ""}),
                ui.Label({"ID": "Status", "Text": "", "WordWrap": True}),
            ]
        ),
    )  # fmt: skip


def read_form(items: Any) -> Form:
    return Form(
        prompt=items["Prompt"].Text,
        negative_prompt=items["Negative"].Text,
        source_prompt=items["SourcePrompt"].Text,
        strength=float(items["Strength"].Value),
        steps=int(items["Steps"].Value),
        seed=int(items["Seed"].Value),
        guidance=float(items["Guidance"].Value),
        kappa=int(items["Kappa"].Value),
        tau=float(items["Tau"].Value),
        b=float(items["B"].Value),
        alpha_early=float(items["AlphaEarly"].Value),
        matte=MATTES[int(items["Matte"].CurrentIndex)][0],
        matte_file=items["MatteFile"].Text,
        output_dir=items["Output"].Text,
    )


def run(resolve: Any, fusion: Any, bmd: Any) -> None:
    """Show the dialog and run its event loop until it is closed."""
    ui = fusion.UIManager
    disp = bmd.UIDispatcher(ui)
    win = build_window(ui, disp)
    items = win.GetItems()
    for _, label in MATTES:
        items["Matte"].AddItem(label)
    controller = Controller(resolve, items["Address"].Text, token_file=str(default_token_file()))
    items["Product"].Text = f"{controller.product} ({'Studio' if controller.studio else 'Free'})"
    timer = ui.Timer({"ID": "Poll", "Interval": 250})

    def show(text: str, fraction: float) -> None:
        target = "Status" if text.startswith(("Done", "Error", "Warning", "Cancelled")) else "Progress"
        items[target].Text = text
        if target == "Progress":
            items["Progress"].Text = f"{text} ({fraction:.0%})"

    def on_check(_ev: Any = None) -> None:
        controller.address, controller.token = items["Address"].Text, items["Token"].Text
        items["Server"].Text = controller.server_status()

    def on_render(_ev: Any = None) -> None:
        controller.address, controller.token = items["Address"].Text, items["Token"].Text
        try:
            job = controller.prepare(read_form(items))
        except host.HostError as exc:
            items["Status"].Text = f"Error: {exc}"
            return
        items["Status"].Text = f"Rendering {job.shot.name} frames {job.shot.source_start}–{job.shot.source_end - 1}"
        controller.start(job)
        timer.Start()

    def on_cancel(_ev: Any = None) -> None:
        if controller.job is not None:
            controller.job.render.cancel.set()
            items["Progress"].Text = "cancelling…"

    def on_poll(_ev: Any = None) -> None:
        if not controller.poll(show):
            timer.Stop()

    def on_close(_ev: Any = None) -> None:
        on_cancel()
        disp.ExitLoop()

    win.On.Check.Clicked = on_check
    win.On.Render.Clicked = on_render
    win.On.Cancel.Clicked = on_cancel
    win.On.KVLock.Close = on_close
    disp.On.Poll.Timeout = on_poll
    win.Show()
    on_check()
    disp.RunLoop()
    win.Hide()
