"""The page's markup: the dialog's fields from :mod:`.form`, and a little script that posts them as JSON and
shows the render's state twice a second. No outside resources: the page works with no network at all."""

from __future__ import annotations

from html import escape

from kvlock_wire import DEFAULT_ADDRESS

from .form import LOCKS, LORAS_HINT, MATTES, NUMBERS, SEED, TASKS, Number

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em auto; max-width: 40em; color: #ddd; background: #222; }
label { display: flex; gap: 1em; margin: .35em 0; } label span { width: 13em; flex: none; }
input, select { flex: 1; background: #333; color: #eee; border: 1px solid #555; padding: .25em; }
button { margin: .6em .4em .6em 0; padding: .4em 1.2em; } progress { width: 100%; }
#status { white-space: pre-wrap; } .muted { color: #999; }
"""

_SCRIPT = """
const base = location.pathname;
const $ = (id) => document.getElementById(id);
async function post(action, body) {
  const reply = await fetch(base + action, {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body || {})});
  show(await reply.json());
}
function connection() { return {address: $("address").value, token: $("token").value}; }
function form() {
  const out = {};
  for (const el of document.querySelectorAll("[data-field]")) out[el.dataset.field] = el.value;
  return out;
}
function show(s) {
  $("server").textContent = s.server; $("status").textContent = s.status;
  $("progress").textContent = s.progress; $("bar").value = s.fraction;
  $("render").disabled = s.running; $("markers").disabled = s.running;
  const model = $("model"), chosen = model.value;
  if (model.options.length - 1 !== s.models.length) {
    model.replaceChildren(new Option("(the server's first)", ""), ...s.models.map((m) => new Option(m, m)));
    model.value = s.models.includes(chosen) ? chosen : "";
  }
  if (s.closed) { document.body.textContent = "KV-Lock is closed; run it again from Workspace › Scripts."; }
  return s;
}
$("check").onclick = () => post("check", connection());
$("render").onclick = () => post("render", {...connection(), form: form()});
$("markers").onclick = () => post("render_markers", {...connection(), form: form()});
$("cancel").onclick = () => post("cancel");
$("close").onclick = () => post("close");
async function poll() {
  try { const s = show(await (await fetch(base + "state")).json()); if (s.closed) return; } catch (e) {}
  setTimeout(poll, 500);
}
poll();
"""


def _row(label: str, control: str) -> str:
    return f"<label><span>{escape(label)}</span>{control}</label>"


def _text(field: str, placeholder: str = "", value: str = "") -> str:
    return f'<input data-field="{field}" placeholder="{escape(placeholder)}" value="{escape(value)}">'


def _number(n: Number) -> str:
    step = "any" if n.kind is float else "1"
    return (f'<input data-field="{n.attr}" type="number" min="{n.minimum:g}" max="{n.high:g}" step="{step}" '
            f'value="{n.default:g}">')  # fmt: skip


def page_html(product: str, nonce: str) -> str:
    mattes = "".join(f'<option value="{key}">{escape(label)}</option>' for key, label in MATTES)
    locks = "".join(f'<option value="{key}">{escape(label)}</option>' for key, label in LOCKS)
    tasks = "".join(f'<option value="{key}">{escape(label)}</option>' for key, label in TASKS)
    rows = [
        _row("Server", f'<input id="address" value="{escape(DEFAULT_ADDRESS)}">'),
        _row("Token", '<input id="token" type="password" placeholder="empty: the local server\'s token file">'),
        _row("Model", '<select id="model" data-field="model"><option value="">(the server\'s first)</option></select>'),
        _row("Task", f'<select data-field="task">{tasks}</select>'),
        _row("LoRAs", _text("loras", LORAS_HINT)),
        _row("Prompt", _text("prompt", "what the subject should become (Erase: the background, optional)")),
        _row("Negative", _text("negative_prompt")),
        _row("Source", _text("source_prompt", "what the clip shows now")),
        _row(SEED.label, f'<input data-field="seed" inputmode="numeric" value="{SEED.default:g}">'),
        _row("Lock", f'<select data-field="lock">{locks}</select>'),
        *(_row(n.label, _number(n)) for n in NUMBERS),
        _row("Matte", f'<select data-field="matte">{mattes}</select>'),
        _row("Matte file", _text("matte_file")),
        _row("Output folder", _text("output_dir", "media folder/KV-Lock")),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>KV-Lock</title><style nonce="{nonce}">{_STYLE}</style></head>
<body>
<h2>KV-Lock</h2>
<p class="muted">{escape(product)} · the clip under the playhead, or between the In and Out marks; or every
timeline marker named KV-Lock (its note is the prompt)</p>
<p id="server" class="muted">not checked</p><button id="check">Check server</button>
{"".join(rows)}
<button id="render">Render</button><button id="markers">Render all KV-Lock markers</button>
<button id="cancel">Cancel</button><button id="close">Close</button>
<progress id="bar" max="1" value="0"></progress>
<p id="progress" class="muted"></p><p id="status"></p>
<script nonce="{nonce}">{_SCRIPT}</script>
</body></html>
"""
