"""The Workspace › Scripts dialog, built with Fusion's UIManager (``resolve.Fusion().UIManager``, the README's
documented way to Fusion); all logic lives in :mod:`.controller`, the fields in :mod:`.form`.

Used on Studio, and on Free before 19.1: Resolve Free 19.1 and later show no UIManager window for
third-party scripts, so :mod:`.launch` opens :mod:`.page` there instead. A UIManager timer polls the
running job, so the dialog stays responsive and Cancel works at any time. Spin boxes are Qt's: a
DoubleSpinBox keeps two decimals unless told otherwise, so each float field sets its ``Decimals``.
"""

from __future__ import annotations

from typing import Any

from kvlock_wire import DEFAULT_ADDRESS, default_token_file

from . import host
from .controller import FINAL, Controller, explain, guarded
from .form import LOCKS, LORAS_HINT, MATTES, NUMBERS, SEED, TASKS, TEXTS, Form, FormError


def _row(ui: Any, label: str, widget: Any) -> Any:
    return ui.HGroup({"Weight": 0}, [ui.Label({"Text": label, "Weight": 0.35}), widget])


def _buttons(ui: Any, *specs: tuple[str, str]) -> Any:
    return ui.HGroup({"Weight": 0}, [ui.Button({"ID": ident, "Text": text}) for ident, text in specs])


def _spin(ui: Any, number: Any) -> Any:
    if number.kind is int:
        return ui.SpinBox({"ID": number.ident, "Minimum": number.minimum, "Maximum": number.high,
                           "Value": number.default})  # fmt: skip
    return ui.DoubleSpinBox({"ID": number.ident, "Decimals": number.decimals, "Minimum": number.minimum,
                             "Maximum": number.high, "SingleStep": 10.0 ** -min(number.decimals, 2),
                             "Value": number.default})  # fmt: skip


def build_window(ui: Any, disp: Any) -> Any:
    numbers = [_row(ui, n.label, _spin(ui, n)) for n in NUMBERS]
    return disp.AddWindow(
        {"ID": "KVLock", "WindowTitle": "KV-Lock", "Geometry": [200, 200, 480, 700]},
        ui.VGroup(
            [
                ui.Label({"ID": "Product", "Text": ""}),
                _row(ui, "Server", ui.LineEdit({"ID": "Address", "Text": DEFAULT_ADDRESS})),
                _row(ui, "Token", ui.LineEdit({"ID": "Token", "Text": "", "EchoMode": "Password"})),
                ui.Label({"ID": "Server", "Text": "not checked"}),
                _buttons(ui, ("Check", "Check server")),
                _row(ui, "Model", ui.ComboBox({"ID": "Model"})),
                _row(ui, "Task", ui.ComboBox({"ID": "Task"})),
                _row(ui, "LoRAs", ui.LineEdit({"ID": "Loras", "PlaceholderText": LORAS_HINT})),
                _row(ui, "Prompt", ui.LineEdit({"ID": "Prompt", "PlaceholderText": "what the subject should become"})),
                _row(ui, "Negative", ui.LineEdit({"ID": "Negative"})),
                _row(ui, "Source", ui.LineEdit({"ID": "SourcePrompt", "PlaceholderText": "what the clip shows now"})),
                _row(ui, SEED.label, ui.LineEdit({"ID": SEED.ident, "Text": str(SEED.default)})),
                _row(ui, "Lock", ui.ComboBox({"ID": "Lock"})),
                *numbers,
                _row(ui, "Matte", ui.ComboBox({"ID": "Matte"})),
                _row(ui, "Matte file", ui.LineEdit({"ID": "MatteFile"})),
                _row(ui, "Output folder", ui.LineEdit({"ID": "Output", "PlaceholderText": "media folder/KV-Lock"})),
                _buttons(ui, ("Render", "Render"), ("Cancel", "Cancel")),
                _buttons(ui, ("RenderMarkers", "Render all KV-Lock markers")),
                ui.Label({"ID": "Progress", "Text": ""}),
                ui.Label({"ID": "Status", "Text": "", "WordWrap": True}),
            ]
        ),
    )  # fmt: skip


def read_form(items: Any, models: list[str]) -> Form:
    values: dict[str, Any] = {attr: items[ident].Text for attr, ident in TEXTS if ident != "Model"}
    values.update({n.attr: items[n.ident].Value for n in NUMBERS})
    values[SEED.attr] = items[SEED.ident].Text
    values["matte"] = MATTES[int(items["Matte"].CurrentIndex)][0]
    values["lock"] = LOCKS[int(items["Lock"].CurrentIndex)][0]
    values["task"] = TASKS[int(items["Task"].CurrentIndex)][0]
    index = int(items["Model"].CurrentIndex)
    values["model"] = models[index] if 0 <= index < len(models) else ""
    return Form.from_values(values)


def _safe(items: Any, handler: Any) -> Any:
    """A UIManager callback that can never raise: whatever goes wrong is shown in the Status line."""

    def call(ev: Any = None) -> None:
        try:
            handler(ev)
        except Exception as exc:  # the dialog must stay usable whatever Resolve answers
            items["Status"].Text = f"Error: {explain('handling the dialog', exc)}"

    return call


class _Dialog:
    """The window's handlers over one controller; the UIManager calls them from its own loop."""

    def __init__(self, resolve: Any, bmd: Any) -> None:
        ui = resolve.Fusion().UIManager
        self.disp = bmd.UIDispatcher(ui)
        self.win = build_window(ui, self.disp)
        self.items = items = self.win.GetItems()
        for _, label in MATTES:
            items["Matte"].AddItem(label)
        for _, label in LOCKS:
            items["Lock"].AddItem(label)
        for _, label in TASKS:
            items["Task"].AddItem(label)
        self.controller = Controller(resolve, items["Address"].Text, token_file=str(default_token_file()))
        items["Product"].Text = self.controller.product.label
        self.timer = ui.Timer({"ID": "Poll", "Interval": 250})

    def show(self, text: str, fraction: float) -> None:
        if text.startswith(FINAL):
            self.items["Status"].Text = text
        else:
            self.items["Progress"].Text = f"{text} ({fraction:.0%})"

    def _connection(self) -> None:
        self.controller.address, self.controller.token = self.items["Address"].Text, self.items["Token"].Text

    def on_check(self, _ev: Any = None) -> None:
        self._connection()
        self.items["Server"].Text = self.controller.server_status()
        self.items["Model"].Clear()
        for name in self.controller.models:
            self.items["Model"].AddItem(name)

    def on_render(self, _ev: Any = None) -> None:
        self._connection()
        try:
            form = guarded("reading the dialog", lambda: read_form(self.items, self.controller.models))
            job = self.controller.prepare(form)
        except (host.HostError, FormError) as exc:
            self.items["Status"].Text = f"Error: {exc}"
            return
        self.items["Status"].Text = job.describe()
        self.controller.start(job)
        self.timer.Start()

    def on_render_markers(self, _ev: Any = None) -> None:
        self._connection()
        try:
            form = guarded("reading the dialog", lambda: read_form(self.items, self.controller.models))
            batch = self.controller.prepare_markers(form)
        except (host.HostError, FormError) as exc:
            self.items["Status"].Text = f"Error: {exc}"
            return
        self.items["Status"].Text = batch.describe()
        self.controller.start_markers(batch)
        self.timer.Start()

    def on_cancel(self, _ev: Any = None) -> None:
        if self.controller.cancel():
            self.items["Progress"].Text = "cancelling…"

    def on_poll(self, _ev: Any = None) -> None:
        if not self.controller.poll(self.show):
            self.timer.Stop()

    def on_close(self, _ev: Any = None) -> None:
        self.on_cancel()
        self.disp.ExitLoop()


def run(resolve: Any, bmd: Any) -> None:
    """Show the dialog and run its event loop until it is closed."""
    dialog = _Dialog(resolve, bmd)
    win, items = dialog.win, dialog.items
    win.On.Check.Clicked = _safe(items, dialog.on_check)
    win.On.Render.Clicked = _safe(items, dialog.on_render)
    win.On.RenderMarkers.Clicked = _safe(items, dialog.on_render_markers)
    win.On.Cancel.Clicked = _safe(items, dialog.on_cancel)
    win.On.KVLock.Close = _safe(items, dialog.on_close)
    dialog.disp.On.Poll.Timeout = _safe(items, dialog.on_poll)
    win.Show()
    _safe(items, dialog.on_check)()
    dialog.disp.RunLoop()
    win.Hide()
