"""The Resolve menu script against the fake Resolve (tests/support/fake_resolve.py), per Resolve version, and a live
server on loopback with the tiny model: the Studio dialog is driven through its buttons and timer, the Free
19.1+ page through real HTTP, as an editor would."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import threading
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.media.timecode import parse_timecode
from kvlock_resolve import dialog, host, launch, page
from kvlock_resolve.controller import Controller
from kvlock_resolve.form import Form, FormError
from kvlock_resolve.page_html import page_html

from ..support import fake_resolve as fr
from ..support.media_helpers import unique_frames
from ..support.server_helpers import start, stop_after_take_one

SCRIPT = Path(__file__).resolve().parents[2] / "plugins" / "resolve" / "KV-Lock.py"
SIZE, TC = 96, 86400  # 01:00:00:00 at 24 fps: timeline frames are absolute
REC, LENGTH, OFFSET = TC + 10, 12, 4  # the clip sits at record frame TC+10, 12 frames, trimmed 4 at the head
SLIP = 7  # the matte clip above is trimmed 7 at its head: its frames are not the source's
DF_RATE = Fraction(30000, 1001)
DF_TC = parse_timecode("01:00:00;00", DF_RATE)  # 107892: drop-frame counted
DF_REC = DF_TC + 1795  # crosses 01:01:00;00, where drop-frame skips two numbers
ALL, MARKS = list(fr.VERSIONS), [v for v in fr.VERSIONS if fr.VERSIONS[v] >= (19, 1)]


def moving_matte(count: int) -> np.ndarray:
    """A box that moves 3 pixels a frame, so a matte read at the wrong frames puts the lock's edge elsewhere."""
    matte = np.zeros((count, SIZE, SIZE), np.uint8)
    for index in range(count):
        matte[index, 30:66, 3 * index % 50 : 3 * index % 50 + 30] = 255
    return matte


def resolve_media(folder: Path) -> dict:
    """The shot and matte movies (24 and 29.97 fps) the fake Resolve's clips point at."""
    frames, matte = unique_frames(30, SIZE, SIZE, seed=5), moving_matte(40)
    for rate, suffix in ((Fraction(24), ""), (DF_RATE, "-2997")):
        write_video(folder / f"shot{suffix}.mkv", frames, rate)
        write_video(folder / f"matte{suffix}.mkv", np.repeat(matte[..., None], 3, -1), rate)
    write_video(folder / "result12.mkv", frames[:LENGTH], Fraction(24))  # a finished render, for placement
    return {"folder": folder, "frames": frames, "matte": matte}


def resolve_servers(tmp_path_factory, media):
    """One server that may read the media folder (path mode), one that may not (upload)."""
    shared = start(tmp_path_factory.mktemp("resolve-shared"), preload=["tiny"], media_roots=[str(media["folder"])])
    private = start(tmp_path_factory.mktemp("resolve-private"), preload=["tiny"])
    yield {"shared": shared, "private": private}
    shared.stop(grace=0)
    private.stop(grace=0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return resolve_media(tmp_path_factory.mktemp("resolve-media"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, media):
    yield from resolve_servers(tmp_path_factory, media)


def make_resolve(media, version="21", studio=False, matte_above=True, rate=None, drop=False, **api) -> fr.Resolve:
    resolve = fr.Resolve(version, studio, **api)
    project = fr.Project(resolve.api, "show")
    resolve.manager.project = project
    timeline_rate = DF_RATE if drop else Fraction(24)
    start_frame, rec = (DF_TC, DF_REC) if drop else (TC, REC)
    timeline = fr.Timeline(resolve.api, "edit", start_frame, timeline_rate, drop, tracks=2)
    project.timeline = timeline
    suffix = "-2997" if drop else ""
    shot = fr.MediaPoolItem(resolve.api, str(media["folder"] / f"shot{suffix}.mkv"), fps=rate or timeline_rate)
    timeline.put(1, shot, rec, rec + LENGTH, OFFSET)
    if matte_above:
        matte = fr.MediaPoolItem(resolve.api, str(media["folder"] / f"matte{suffix}.mkv"))
        timeline.put(2, matte, rec, rec + LENGTH, SLIP)
    timeline.playhead = rec + 3
    return resolve


def timeline_of(resolve) -> fr.Timeline:
    return resolve.manager.project.timeline


def run_dialog(resolve, server, fields: dict, out: Path, token: str | None = None, cancel_after_steps: int = 0):
    """Open the dialog (through the menu script itself), fill it, press Render, let its timer run to the end."""
    seen: list[str] = []

    def fill(d: fr.Dispatcher) -> None:
        items = d.windows[-1].GetItems()
        items["Address"].Text, items["Token"].Text = server.address, server.token if token is None else token
        items["Prompt"].Text, items["Output"].Text = "a red cube", str(out)
        items["Steps"].Value = fields.pop("steps", 3)
        for (ident, prop), value in fields.items():
            setattr(items[ident], prop, value)

    def wait(d: fr.Dispatcher) -> None:
        deadline, cancelled = time.monotonic() + 300, False
        while d.tick_timers():
            seen.append(d.windows[-1].GetItems()["Progress"].Text)
            step = re.search(r"step (\d+)/", seen[-1])  # a loaded machine may tick past step N: at or after it
            if cancel_after_steps and not cancelled and step and int(step.group(1)) >= cancel_after_steps:
                d.click("Cancel")
                cancelled = True
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.05)

    close = lambda d: d.windows[-1].On.KVLock.events["Close"]({})  # noqa: E731
    bmd = fr.Bmd(resolve, [fill, lambda d: d.click("Render"), wait, close])
    runpy.run_path(str(SCRIPT), init_globals={"resolve": resolve, "bmd": bmd})  # no `fusion`: resolve.Fusion()
    return bmd.dispatchers[0].windows[0].GetItems(), seen


def placed_items(resolve, track: int):
    return timeline_of(resolve).GetItemListInTrack("video", track)


def assert_background_is_source(result: Path, media, first: int, count: int, matte_first: int | None = None) -> None:
    edited = read_frames(probe(result), 0, count)[..., :3]
    source = media["frames"][first : first + count]
    mattes = media["matte"][(first if matte_first is None else matte_first) :][:count]
    outside = np.stack([feather_matte(m / 255.0, 4) for m in mattes]) == 0
    assert edited.shape == source.shape
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])


def last_settings(server) -> dict:
    """The settings the newest job was sent with (fields it left to the model are None)."""
    return max(server.store.list(limit=1000), key=lambda r: r.created).spec.settings.to_dict()


# --- the whole path, with a real server -------------------------------------------------------------------


@pytest.mark.parametrize(("version", "studio"), [("18.5", False), ("21", True)])
def test_dialog_renders_the_clip_under_the_playhead_with_its_slipped_matte(tmp_path, servers, media, version, studio):
    resolve = make_resolve(media, version, studio)
    fields = {("Lock", "CurrentIndex"): 1, ("Tau", "Value"): 0.005, ("Seed", "Text"): str(2**40)}  # custom lock
    items, seen = run_dialog(resolve, servers["shared"], fields, tmp_path)
    assert items["Product"].Text.endswith("(Studio)" if studio else "(Free)") and resolve.api.modals == []
    assert items["Status"].Text.startswith(f"Done: placed on V3 at 01:00:00:10 (frame {REC})"), items["Status"].Text
    assert ("cannot report In/Out marks" in items["Status"].Text) == (version == "18.5")  # said, not silent
    assert any(s.startswith("step ") and "σ²" in s for s in seen)
    assert last_settings(servers["shared"])["tau"] == 0.005 and last_settings(servers["shared"])["seed"] == 2**40
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd(), placed.GetLeftOffset()) == (REC, REC + LENGTH, 0)
    kvlock_bin = resolve.manager.project.media_pool.root.GetSubFolderList()
    assert [f.GetName() for f in kvlock_bin] == ["KV-Lock"] and len(kvlock_bin[0].GetClipList()) == 1
    result = tmp_path / "shot.kvlock.mkv"
    assert placed.GetMediaPoolItem().GetClipProperty("File Path") == str(result)
    assert_background_is_source(result, media, OFFSET, LENGTH, matte_first=SLIP)  # the matte's own frames


def write_linear_plate(folder: Path, openexr, count: int = 30, first: int = 1001) -> np.ndarray:
    """A scene-linear EXR plate (half float, highlights up to 4.0 and a few negative values), numbered from 1001."""
    folder.mkdir(exist_ok=True)
    plate = (unique_frames(count, SIZE, SIZE, seed=11).astype(np.float32) / 255.0 * 4.0 - 0.05).astype(np.float16)
    for index, frame in enumerate(plate):
        channels = {name: np.ascontiguousarray(frame[..., k]) for k, name in enumerate("RGB")}
        header = {"compression": openexr.ZIP_COMPRESSION}
        openexr.File(header, channels).write(str(folder / f"plate.{first + index}.exr"))
    return plate


def test_a_linear_exr_plate_comes_back_as_exr_with_its_own_values_and_colour(tmp_path, servers, media):
    openexr = pytest.importorskip("OpenEXR")
    plate = write_linear_plate(media["folder"] / "linear-plate", openexr)
    resolve = make_resolve(media, "21", studio=True, matte_above=False)
    timeline = timeline_of(resolve)
    timeline._tracks[0].clear()
    colour = {"Input Color Space": "ACEScg", "Input Gamma": "Linear"}
    shot = fr.MediaPoolItem(resolve.api, str(media["folder"] / "linear-plate" / "plate.1001.exr"), Fraction(24), colour)
    assert shot.GetClipProperty("File Path").endswith("plate.[1001-1030].exr")  # Resolve's name for a sequence
    timeline.put(1, shot, REC, REC + LENGTH, OFFSET)
    timeline.put(2, fr.MediaPoolItem(resolve.api, str(media["folder"] / "matte.mkv")), REC, REC + LENGTH, SLIP)
    items, _ = run_dialog(resolve, servers["shared"], {}, tmp_path)
    assert items["Status"].Text.startswith("Done: placed on V3"), items["Status"].Text
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd(), placed.GetLeftOffset()) == (REC, REC + LENGTH, 0)
    result = placed.GetMediaPoolItem()
    assert {k: result.GetClipProperty(k) for k in colour} == colour  # Resolve interprets it as the plate
    assert last_settings(servers["shared"]) is not None
    folder = tmp_path / "plate.kvlock"
    numbers = sorted(int(f.name.split(".")[-2]) for f in folder.glob("*.exr"))
    assert numbers == list(range(1001 + OFFSET, 1001 + OFFSET + LENGTH))  # the plate's own frame numbers
    edited = read_frames(probe(folder), 0, LENGTH)
    source = plate[OFFSET : OFFSET + LENGTH]
    assert edited.dtype == np.float16 and edited.shape == source.shape
    outside = np.stack([feather_matte(m / 255.0, 4) for m in media["matte"][SLIP : SLIP + LENGTH]]) == 0
    assert (source[outside] > 1.0).any() and (source[outside] < 0).any()
    assert np.array_equal(edited[outside].view(np.uint16), source[outside].view(np.uint16))  # bit for bit
    assert not np.array_equal(edited[~outside], source[~outside])


def test_an_exr_plate_is_not_uploaded_as_code_values(tmp_path, servers, media):
    openexr = pytest.importorskip("OpenEXR")
    write_linear_plate(media["folder"] / "linear-plate", openexr)
    resolve = make_resolve(media, "21", studio=True, matte_above=False)
    timeline = timeline_of(resolve)
    timeline._tracks[0].clear()
    shot = fr.MediaPoolItem(resolve.api, str(media["folder"] / "linear-plate" / "plate.1001.exr"), Fraction(24))
    timeline.put(1, shot, REC, REC + LENGTH, OFFSET)
    timeline.put(2, fr.MediaPoolItem(resolve.api, str(media["folder"] / "matte.mkv")), REC, REC + LENGTH, SLIP)
    items, _ = run_dialog(resolve, servers["private"], {}, tmp_path)
    assert items["Status"].Text.startswith("Error") and "EXR plate goes by path only" in items["Status"].Text
    assert placed_items(resolve, 3) == [] and not list(tmp_path.iterdir())


def drive_page(url: str, actions: list, log: list) -> None:
    """What the editor does in the browser, over real HTTP: load, check, render, wait, close."""

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read()) if path else {"html": reply.read().decode()}

    call.url = url  # type: ignore[attr-defined]
    try:
        for action in actions:
            log.append(action(call))
    except Exception as exc:  # reported to the test, which fails on it
        log.append(exc)
        call("close", {})


def run_page(resolve, actions: list, bmd=None) -> tuple[list, str]:
    """Run the menu script's launcher; the 'browser' it opens is a thread doing ``actions`` over HTTP."""
    log: list = []
    opened: list = []

    def open_browser(url: str) -> bool:
        opened.append(url)
        opened.append(threading.Thread(target=drive_page, args=(url, actions, log), daemon=True))
        opened[-1].start()
        return True

    launch.main(resolve, bmd, open_browser=open_browser, idle_s=300)
    opened[1].join(timeout=30)
    assert not [entry for entry in log if isinstance(entry, Exception)], log
    return log, opened[0]


def wait_until_done(call) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = call("state")
        if not state["running"] and state["status"].startswith(("Done", "Error", "Warning", "Cancelled")):
            return state
        time.sleep(0.1)
    raise AssertionError("the job did not end")


@pytest.mark.parametrize("version", ["19.1", "21"])
def test_free_19_1_and_later_render_from_the_page_on_a_drop_frame_timeline(tmp_path, servers, media, version):
    resolve = make_resolve(media, version, drop=True)
    timeline_of(resolve).mark(DF_REC + 2, DF_REC + 7)
    server = servers["shared"]
    form = {
        "prompt": "a red cube",
        "steps": "3",
        "lock": "custom",
        "tau": "0.005",
        "output_dir": str(tmp_path),
        "matte": "above",
    }
    log, _ = run_page(resolve, [
        lambda call: call(""),
        lambda call: call("check", {"address": server.address, "token": server.token}),
        lambda call: call("render", {"address": server.address, "token": server.token, "form": form}),
        wait_until_done,
        lambda call: call("close", {}),
    ], bmd=fr.Bmd(resolve, []))  # fmt: skip
    html, checked, rendering, done, _ = log
    assert "Threshold τ" in html["html"] and 'step="any"' in html["html"] and checked["models"][:1] == ["tiny"]
    assert rendering["status"].startswith("Rendering shot-2997.mkv, 01:00:59;27–01:01:00;04 (6 frames from V1")
    assert done["status"] == f"Done: placed on V3 at 01:00:59;27 (frame {DF_REC + 2}), 6 frames", done["status"]
    assert resolve.api.modals == []  # UIManager was never touched, so no "limitation" dialog blocks Resolve
    assert last_settings(server)["tau"] == 0.005
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd()) == (DF_REC + 2, DF_REC + 8)
    assert_background_is_source(tmp_path / "shot-2997.kvlock.mkv", media, OFFSET + 2, 6, matte_first=SLIP + 2)


def test_the_page_only_answers_this_machine_with_its_key(media):
    def refused(call) -> list:
        codes = []
        for target, headers, data in (
            (call.url.replace(call.url.split("/")[3], "wrong-key"), {}, None),
            (call.url + "state", {"Host": "evil.example:80"}, None),
            (call.url + "state", {"Origin": "http://evil.example"}, None),
            (call.url + "close", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),  # a cross-site form
        ):
            try:
                urllib.request.urlopen(urllib.request.Request(target, data, headers), timeout=10)
                codes.append(200)
            except urllib.error.HTTPError as error:
                codes.append(error.code)
        return codes

    actions = [refused, lambda call: call("render", {"form": {"prompt": "x", "tau": "-1"}}), lambda c: c("close", {})]
    (codes, bad_tau, closed), url = run_page(make_resolve(media, "20"), actions)
    assert codes == [404, 421, 403, 415] and url.startswith("http://127.0.0.1:")
    expected = "Error: Threshold τ (0: the model's calibrated τ) must be at least 0 and at most 1e+06, got -1"
    assert bad_tau["status"] == expected and closed["closed"]


BROWSER = """
const [url, script, ids, data] = process.argv.slice(1).map((a, i) => (i < 2 ? a : JSON.parse(a)));
class El {
  constructor(value) { Object.assign(this, {value: value ?? "", textContent: "", disabled: false, dataset: {}}); }
  replaceChildren(...options) { this.options = options; }
}
const byId = Object.fromEntries(Object.entries(ids).map(([id, value]) => [id, new El(value)]));
byId.model.options = [{value: ""}];
const fields = Object.entries(data).map(([name, value]) => {
  const el = name === "model" ? byId.model : new El(value);
  el.dataset.field = name;
  return el;
});
const field = (name) => fields.find((el) => el.dataset.field === name);
globalThis.document = {getElementById: (id) => byId[id], querySelectorAll: () => fields, body: {}};
globalThis.location = {pathname: new URL(url).pathname};
globalThis.Option = class { constructor(text, value) { Object.assign(this, {text, value}); } };
const send = fetch;
globalThis.fetch = (path, init) => send(new URL(path, url), init);
eval(script);
(async () => {
  const seen = [];
  await byId.check.onclick();
  seen.push(byId.server.textContent, byId.model.options.map((o) => o.value));
  field("prompt").value = "a red cube";
  field("tau").value = "-1";
  await byId.render.onclick();
  seen.push(byId.status.textContent);
  await byId.close.onclick();
  seen.push(document.body.textContent);
  console.log(JSON.stringify(seen));
  process.exit(0);
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_the_pages_own_script_drives_it(servers, media):
    """The page's JavaScript itself (in Node, with the page's element ids) against the live page."""
    from kvlock_resolve.page_html import _SCRIPT

    server, out = servers["shared"], []
    ids = {"address": server.address, "token": server.token, "server": "", "model": "", "status": "",
           "progress": "", "bar": 0, "check": "", "render": "", "markers": "", "cancel": "", "close": ""}  # fmt: skip
    data = {"model": "", "prompt": "", "tau": "0.01", "steps": "3", "matte": "above", "output_dir": ""}

    def open_browser(url: str) -> bool:
        def run() -> None:
            args = ["node", "-e", BROWSER, url, _SCRIPT, json.dumps(ids), json.dumps(data)]
            out.append(subprocess.run(args, capture_output=True, text=True, timeout=120))

        out.append(threading.Thread(target=run, daemon=True))
        out[0].start()
        return True

    launch.main(make_resolve(media, "19.1"), None, open_browser=open_browser, idle_s=120)
    out[0].join(timeout=60)
    assert out[1].returncode == 0, out[1].stderr
    checked, models, status, closed = json.loads(out[1].stdout)
    assert checked.startswith(f"connected to {server.address}") and "tiny" in models
    assert status == "Error: Threshold τ (0: the model's calibrated τ) must be at least 0 and at most 1e+06, got -1"
    assert closed.startswith("KV-Lock is closed")


def test_in_out_marks_choose_the_range_and_upload_when_the_server_cannot_read_the_disk(tmp_path, servers, media):
    resolve = make_resolve(media, "20", studio=True)
    timeline_of(resolve).mark(REC + 2, REC + 7)  # inclusive Out: 6 frames
    controller_jobs = []
    original = Controller.start
    Controller.start = lambda self, job: (controller_jobs.append(job), original(self, job))[1]
    try:
        items, _ = run_dialog(resolve, servers["private"], {}, tmp_path)
    finally:
        Controller.start = original
    assert items["Status"].Text.startswith(f"Done: placed on V3 at 01:00:00:12 (frame {REC + 2})"), items["Status"].Text
    assert controller_jobs[0].render.snapshot().uploaded  # the server refused the path: frames were sent
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd()) == (REC + 2, REC + 8)
    assert_background_is_source(tmp_path / "shot.kvlock.mkv", media, OFFSET + 2, 6, matte_first=SLIP + 2)


def test_clip_matte_and_matte_file_follow_the_source(tmp_path, servers, media):
    resolve = make_resolve(media, "21", studio=True, matte_above=False)
    source_item = placed_items(resolve, 1)[0].GetMediaPoolItem()
    resolve.manager.project.media_pool.mattes[source_item.GetUniqueId()] = [str(media["folder"] / "matte.mkv")]
    (tmp_path / "a").mkdir()
    items, _ = run_dialog(resolve, servers["shared"], {("Matte", "CurrentIndex"): 1}, tmp_path / "a")
    assert items["Status"].Text.startswith(f"Done: placed on V2 at 01:00:00:10 (frame {REC})"), items["Status"].Text
    assert_background_is_source(tmp_path / "a" / "shot.kvlock.mkv", media, OFFSET, LENGTH)
    resolve = make_resolve(media, "18.5", matte_above=False)
    fields = {("Matte", "CurrentIndex"): 2, ("MatteFile", "Text"): str(media["folder"] / "matte.mkv")}
    (tmp_path / "b").mkdir()
    items, _ = run_dialog(resolve, servers["shared"], fields, tmp_path / "b")
    assert items["Status"].Text.startswith("Done: placed on V2"), items["Status"].Text
    assert_background_is_source(tmp_path / "b" / "shot.kvlock.mkv", media, OFFSET, LENGTH)


def test_a_failed_job_shows_the_servers_reason(tmp_path, servers, media, monkeypatch):
    import torch

    class ExhaustedEditor:
        def edit_takes(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(servers["shared"].executor, "editor", lambda model, slot=0: ExhaustedEditor())
    resolve = make_resolve(media, studio=True)
    items, _ = run_dialog(resolve, servers["shared"], {}, tmp_path)
    assert items["Status"].Text.startswith("Error: the job failed:") and "ran out of memory" in items["Status"].Text
    assert placed_items(resolve, 3) == [] and list(tmp_path.iterdir()) == []


def test_cancel_mid_job(tmp_path, servers, media):
    resolve = make_resolve(media, studio=True)
    items, _ = run_dialog(resolve, servers["shared"], {"steps": 30}, tmp_path, cancel_after_steps=2)
    assert items["Status"].Text == "Cancelled"
    assert placed_items(resolve, 3) == [] and list(tmp_path.iterdir()) == []


def test_takes_go_into_the_placed_clip_s_take_selector(tmp_path, servers, media):
    resolve = make_resolve(media, "21", studio=True)
    items, seen = run_dialog(resolve, servers["shared"], {("Takes", "Value"): 3}, tmp_path)
    status = items["Status"].Text
    assert status.startswith(f"Done: placed on V3 at 01:00:00:10 (frame {REC})"), status
    assert "takes 1–3 in its Take Selector, take 1 shown" in status
    assert any(s.startswith("take 3/3, step ") for s in seen)  # progress per take
    assert last_settings(servers["shared"])["takes"] == 3
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd(), placed.GetLeftOffset()) == (REC, REC + LENGTH, 0)
    results = [tmp_path / f"shot.kvlock.take{k}.mkv" for k in (1, 2, 3)]
    assert placed.GetTakesCount() == 3 and placed.GetSelectedTakeIndex() == 1
    takes = [placed.GetTakeByIndex(i)["mediaPoolItem"].GetClipProperty("File Path") for i in (1, 2, 3)]
    assert takes == [str(r) for r in results]
    assert placed.GetMediaPoolItem().GetClipProperty("File Path") == str(results[0])
    (kvlock_bin,) = resolve.manager.project.media_pool.root.GetSubFolderList()
    assert len(kvlock_bin.GetClipList()) == 3
    for result in results:
        assert_background_is_source(result, media, OFFSET, LENGTH, matte_first=SLIP)
        assert result.with_name(result.name.replace(".mkv", ".trace.json")).is_file()
    first, second = (read_frames(probe(r), 0, LENGTH) for r in results[:2])
    assert not np.array_equal(first, second)  # other versions of the subject


@pytest.mark.parametrize(
    ("api", "words"),
    [
        ({"hidden": {"AddTake"}}, "this Resolve gives scripts no AddTake (the Take Selector): takes 2–3 wait"),
        ({"faults": {"takes_refused"}}, "Resolve refused take 2 (AddTake): takes 2–3 wait"),
    ],
)
def test_takes_wait_in_the_bin_where_the_take_selector_is_missing_or_refused(tmp_path, media, api, words):
    resolve = make_resolve(media, **api)
    project, timeline = resolve.manager.project, timeline_of(resolve)
    results = []
    for k in (1, 2, 3):
        results.append(tmp_path / f"take{k}.mkv")
        shutil.copyfile(media["folder"] / "result12.mkv", results[-1])
    placed = host.place_takes(project, timeline, host.shot_to_edit(timeline), results)
    assert not placed.confirmed and placed.message.startswith(f"placed on V3 at 01:00:00:10 (frame {REC})")
    assert words in placed.message and "take2.mkv, take3.mkv" in placed.message
    ((item),) = timeline.items(3)
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == str(results[0])
    assert item.GetTakesCount() == 0  # nothing half-made: a plain clip of take 1
    assert len(project.media_pool.root.GetSubFolderList()[0].GetClipList()) == 3


def test_a_take_selector_that_loses_a_take_is_said(tmp_path, media, monkeypatch):
    resolve = make_resolve(media)
    project, timeline = resolve.manager.project, timeline_of(resolve)
    add = fr.TimelineItem.AddTake

    def forgetful(self, clip, *extents):  # says True, keeps nothing of the new take
        return add(self, clip) and bool(self._takes.pop())

    monkeypatch.setattr(fr.TimelineItem, "AddTake", forgetful)
    results = [tmp_path / f"take{k}.mkv" for k in (1, 2)]
    for result in results:
        shutil.copyfile(media["folder"] / "result12.mkv", result)
    placed = host.place_takes(project, timeline, host.shot_to_edit(timeline), results)
    assert not placed.confirmed and "the Take Selector on V3 does not hold all 2 takes: take 2 wait" in placed.message


def test_a_cancel_after_the_first_take_places_it(tmp_path, servers, media, monkeypatch):
    stop_after_take_one(servers["shared"], monkeypatch)
    resolve = make_resolve(media, "21", studio=True)
    items, _ = run_dialog(resolve, servers["shared"], {("Takes", "Value"): 3}, tmp_path)
    status = items["Status"].Text
    assert status.startswith("Cancelled: cancelled after step") and "take 1 of 3 was finished and kept" in status
    assert f"placed on V3 at 01:00:00:10 (frame {REC})" in status
    (placed,) = placed_items(resolve, 3)
    assert placed.GetTakesCount() == 0
    assert placed.GetMediaPoolItem().GetClipProperty("File Path") == str(tmp_path / "shot.kvlock.take1.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shot.kvlock.take1.mkv",
        "shot.kvlock.take1.trace.json",
        "shot.kvlock.take1.trace.png",
    ]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("no_project", "no project is open"),
        ("no_timeline", "no current timeline"),
        ("no_clip", "no clip at the playhead (01:00:04:14)"),
        ("fusion_page", "Resolve did not report the playhead"),
        ("mixed_rates", "25 fps on a 24 fps timeline"),
        ("server_down", "KV-Lock server is not running at 127.0.0.1:9"),
        ("bad_token", "the server refused the token"),
        ("short_matte", "matte length mismatch"),
        ("half_marks", "only one mark is set: set the Out mark too"),
        ("tau_negative", "Threshold τ (0: the model's calibrated τ) must be at least 0"),
        ("resolve_breaks", "Resolve answered unexpectedly while reading the timeline (RuntimeError: bad handle)"),
        ("api_gone", "Resolve answered unexpectedly while reading the timeline (TypeError:"),
    ],
)
def test_problems_are_explained_in_the_dialog(setup, expected, tmp_path, servers, media):
    resolve = make_resolve(media, studio=True, rate=Fraction(25) if setup == "mixed_rates" else None)
    server, token, fields, timeline = servers["shared"], None, {}, timeline_of(resolve)
    if setup == "no_project":
        resolve.manager.project = None
    elif setup == "no_timeline":
        resolve.manager.project.timeline = None
    elif setup == "no_clip":
        timeline.playhead = REC + 100
    elif setup == "fusion_page":
        resolve.api.page = "fusion"
    elif setup == "server_down":
        server = type("Down", (), {"address": "127.0.0.1:9", "token": "x"})()
    elif setup == "bad_token":
        token = "wrong"
    elif setup == "short_matte":
        timeline._tracks[1] = []
        timeline.put(2, fr.MediaPoolItem(resolve.api, str(media["folder"] / "matte.mkv")), REC + 2, REC + 6)
    elif setup == "half_marks":
        timeline.mark(REC + 2, None)
    elif setup == "tau_negative":
        fields = {("Tau", "Decimals"): 6, ("Tau", "Minimum"): -1.0, ("Tau", "Value"): -1.0}  # typed past the box
    elif setup == "resolve_breaks":
        timeline.GetItemListInTrack = lambda *a: (_ for _ in ()).throw(RuntimeError("bad handle"))
    elif setup == "api_gone":
        timeline.GetTrackCount = None  # as Resolve answers a call it does not have
    items, _ = run_dialog(resolve, server, fields, tmp_path, token=token)
    assert items["Status"].Text.startswith("Error: ") and expected in items["Status"].Text, items["Status"].Text
    assert list(tmp_path.iterdir()) == []


# --- Resolve's behaviour per version, without a server ------------------------------------------------------


@pytest.mark.parametrize("version", MARKS)
def test_marks_are_relative_to_the_timeline_start(media, version):
    resolve = make_resolve(media, version)
    timeline_of(resolve).mark(REC + 2, REC + 7)
    assert timeline_of(resolve).GetMarkInOut()["video"] == {"in": 12, "out": 17}  # as Resolve reports them
    shot = host.shot_to_edit(timeline_of(resolve))
    assert (shot.record_start, shot.frames, shot.source_start, shot.notes) == (REC + 2, 6, OFFSET + 2, ())


def test_before_19_1_the_marks_cannot_be_read_and_the_editor_is_told(media):
    resolve = make_resolve(media, "18.5")
    timeline_of(resolve).mark(REC + 2, REC + 7)
    assert "GetMarkInOut" not in dir(timeline_of(resolve))
    shot = host.shot_to_edit(timeline_of(resolve))
    assert (shot.record_start, shot.frames) == (REC, LENGTH)
    assert shot.notes == ("this Resolve cannot report In/Out marks to scripts (19.1 and later can): editing the "
                          "whole clip under the playhead",)  # fmt: skip


@pytest.mark.parametrize("version", MARKS)
def test_a_whole_clip_mark_read_as_exclusive_is_the_clip(media, version):
    resolve = make_resolve(media, version)
    timeline_of(resolve).mark(REC, REC + LENGTH)  # Out one past the clip: the exclusive reading of "mark clip"
    shot = host.shot_to_edit(timeline_of(resolve))
    assert (shot.record_start, shot.frames) == (REC, LENGTH) and "one frame past the clip's end" in shot.notes[0]
    timeline_of(resolve).mark(REC, REC + LENGTH + 1)
    with pytest.raises(host.HostError, match=r"spans more than shot\.mkv"):
        host.shot_to_edit(timeline_of(resolve))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("drop", [False, True])
def test_the_playhead_picks_the_frame_on_any_timeline(media, version, drop):
    resolve = make_resolve(media, version, drop=drop)
    timeline = timeline_of(resolve)
    assert (";" in timeline.GetCurrentTimecode()) == drop and timeline.GetSetting("timelineFrameRate") == (
        "29.97 DF" if drop else "24"
    )
    shot = host.shot_to_edit(timeline)
    rec = DF_REC if drop else REC
    assert (shot.record_start, shot.frames, shot.source_start, shot.drop_frame) == (rec, LENGTH, OFFSET, drop)
    timeline.playhead = rec + LENGTH  # the first frame after the clip
    with pytest.raises(host.HostError, match="no clip at the playhead"):
        host.shot_to_edit(timeline)


@pytest.mark.parametrize("version", ALL)
def test_a_clip_above_the_source_is_never_taken_for_it(media, version):
    resolve = make_resolve(media, version, matte_above=False)
    timeline = timeline_of(resolve)
    timeline.put(2, None, REC - 5, REC + 20, name="Text+")  # a title over the In mark
    other = timeline.put(3, fr.MediaPoolItem(resolve.api, str(media["folder"] / "matte.mkv")), REC, REC + 30)
    timeline.mark(REC + 2, REC + 7)
    assert timeline.GetCurrentVideoItem() is other  # what Resolve reports at the playhead: the top of the stack
    shot = host.shot_to_edit(timeline)
    assert (shot.name, shot.track) == ("shot.mkv", 1)
    timeline.disable(1)  # a disabled track's clip is not what the editor sees
    assert host.shot_to_edit(timeline).track == 3


def test_a_selected_clip_is_the_source_where_resolve_reports_the_selection(media):
    for version, expected in (("20", 1), ("21", 2)):
        resolve = make_resolve(media, version)  # V1 the shot, V2 a clip over it (here the matte clip)
        timeline = timeline_of(resolve)
        timeline.select(placed_items(resolve, 2)[0])
        shot = host.shot_to_edit(timeline)
        assert shot.track == expected, version
        assert shot.notes == (("the selected clip on V2",) if expected == 2 else ())


@pytest.mark.parametrize("end_frame", ["exclusive", "inclusive"])
@pytest.mark.parametrize("version", ALL)
def test_placement_lands_under_either_reading_of_end_frame(media, version, end_frame):
    resolve = make_resolve(media, version, end_frame=end_frame)
    project, timeline = resolve.manager.project, timeline_of(resolve)
    shot = host.shot_to_edit(timeline)
    placed = host.place_result(project, timeline, shot, media["folder"] / "result12.mkv")
    assert placed.confirmed and placed.message == f"placed on V3 at 01:00:00:10 (frame {REC}), 12 frames"
    ((item),) = timeline.items(3)
    assert (item.GetStart(), item.GetEnd(), item.GetLeftOffset()) == (REC, REC + LENGTH, 0)
    sent = [a["endFrame"] for a in project.media_pool.appends]
    assert sent == ([LENGTH] if end_frame == "exclusive" else [LENGTH, LENGTH - 1])
    assert {(a["trackIndex"], a["recordFrame"], a["mediaType"]) for a in project.media_pool.appends} == {(3, REC, 1)}


@pytest.mark.parametrize(
    ("faults", "words"),
    [
        ({"drop"}, "Resolve did not place the result on V3 at 01:00:00:10"),
        ({"misplace"}, "placed at 01:00:00:11–01:00:00:22, removed"),
        ({"misplace", "no_delete"}, "would not let the script remove it"),
    ],
)
def test_a_wrong_placement_is_undone_and_the_clip_waits_in_the_bin(media, faults, words):
    resolve = make_resolve(media, faults=faults)
    project, timeline = resolve.manager.project, timeline_of(resolve)
    placed = host.place_result(project, timeline, host.shot_to_edit(timeline), media["folder"] / "result12.mkv")
    assert not placed.confirmed and words in placed.message and "result12.mkv" in placed.message
    assert len(timeline.items(3)) == (1 if "no_delete" in faults else 0)
    assert [c.GetName() for c in project.media_pool.root.GetSubFolderList()[0].GetClipList()] == ["result12.mkv"]


def test_placement_skips_busy_and_locked_tracks(media):
    resolve = make_resolve(media)
    project, timeline = resolve.manager.project, timeline_of(resolve)
    timeline.put(3, fr.MediaPoolItem(resolve.api, str(media["folder"] / "matte.mkv")), REC + 5, REC + 20)
    timeline.AddTrack("video")
    timeline.lock(4)
    placed = host.place_result(project, timeline, host.shot_to_edit(timeline), media["folder"] / "result12.mkv")
    assert placed.confirmed and placed.track == 5 and timeline.GetTrackCount("video") == 5


@pytest.mark.parametrize(("version", "studio", "window"), [
    ("18.5", False, "dialog"), ("19.1", False, "page"), ("20", False, "page"), ("21", False, "page"),
    ("18.5", True, "dialog"), ("19.1", True, "dialog"), ("21", True, "dialog"),
])  # fmt: skip
def test_the_window_is_chosen_from_the_documented_product_and_version(media, monkeypatch, version, studio, window):
    resolve, opened = make_resolve(media, version, studio), []
    monkeypatch.setattr(dialog, "run", lambda r, bmd: opened.append("dialog"))
    monkeypatch.setattr(page, "run", lambda r, **options: opened.append("page"))
    launch.main(resolve, fr.Bmd(resolve, []))
    assert opened == [window] and resolve.api.modals == []
    edition = "Studio" if studio else "Free"
    number = ".".join(map(str, fr.VERSIONS[version]))
    assert host.product(resolve).label == f"DaVinci Resolve{' Studio' if studio else ''} {number} ({edition})"


def test_the_fake_answers_like_resolve():
    """hasattr is always true and an unknown name is None, so a typo fails loudly; dir tells the version's truth;
    on Free 19.1+ reaching for UIManager raises Resolve's "limitation" dialog."""
    resolve = fr.Resolve("19.1")
    assert hasattr(resolve, "NoSuchCall") and resolve.NoSuchCall is None and "NoSuchCall" not in dir(resolve)
    with pytest.raises(TypeError):
        resolve.GetProjectManger()  # a typo
    timeline = fr.Timeline(resolve.api, "t", TC, Fraction(24))
    assert "GetMarkInOut" in dir(timeline) and "GetSelectedClips" not in dir(timeline)
    assert not host.has(timeline, "GetSelectedClips") and timeline.GetSelectedClips is None
    assert "GetMarkInOut" not in dir(fr.Timeline(fr.Resolve("18.5").api, "t", TC, Fraction(24)))
    assert resolve.Fusion().UIManager is not None
    assert resolve.api.modals == ["You've reached a limitation with DaVinci Resolve"]
    spin = fr.UIManager().DoubleSpinBox({"Value": 0.005})
    assert spin.Value == 0.01  # Qt's two decimals: why the dialog sets Decimals on every float field


def test_form_fields_take_the_engines_whole_range():
    form = Form.from_values({"tau": "0.0005", "strength": "0.001", "seed": str(2**63 - 1), "steps": 0, "b": "1"})
    assert (form.tau, form.strength, form.seed, form.b) == (0.0005, 0.001, 2**63 - 1, 1.0)
    custom = {"lock": "custom"}
    assert "tau" not in Form.from_values({**custom, "tau": "0"}).settings()  # 0: the model's calibrated τ
    assert Form.from_values({**custom, "tau": "0.0005"}).settings()["tau"] == 0.0005
    chosen = Form.from_values({**custom, "kappa": "12", "alpha_early": "0.5"}).settings()
    assert (chosen["method"], chosen["kappa"], chosen["alpha_early"], chosen["b"]) == ("kvlock", 12, 0.5, 2.0)
    # the model's lock (the default) sends no lock setting: the schedule calibrated for the model applies
    model = Form.from_values({"kappa": "12", "tau": "0.0005"}).settings()
    assert not {"method", "kappa", "tau", "b", "alpha_early"} & set(model)
    with pytest.raises(FormError, match="lock must be one of"):
        Form.from_values({"lock": "firm"})
    for field, value in (("tau", "-0.5"), ("strength", "1.5"), ("steps", "-1"), ("alpha_early", "nan"), ("seed", "x")):
        with pytest.raises(FormError):
            Form.from_values({field: value})
    with pytest.raises(FormError, match="unknown fields: colour"):
        Form.from_values({"colour": "red"})
    assert host.parse_rate("29.97 DF") == (Fraction(30000, 1001), True) and host.parse_rate(23.976)[0] == Fraction(
        24000, 1001
    )
    assert host.parse_rate("59.94 DF")[1] and not host.parse_rate("29.97")[1] and host.parse_rate("25") == (25, False)


def test_the_erase_task_renders_without_a_prompt_from_the_dialog_and_the_page(tmp_path, servers, media):
    server = servers["shared"]
    resolve = make_resolve(media, "21", True)
    fields = {("Task", "CurrentIndex"): 1, ("Prompt", "Text"): ""}
    items, _ = run_dialog(resolve, server, fields, tmp_path / "dialog")
    assert items["Status"].Text.startswith("Done: placed on V3"), items["Status"].Text
    assert last_settings(server)["erase"] is True
    assert_background_is_source(tmp_path / "dialog" / "shot.kvlock.mkv", media, OFFSET, LENGTH, matte_first=SLIP)
    resolve = make_resolve(media, "21")
    form = {"task": "erase", "prompt": "", "steps": "3", "output_dir": str(tmp_path / "page"), "matte": "above"}
    log, _ = run_page(resolve, [
        lambda call: call("render", {"address": server.address, "token": server.token, "form": form}),
        wait_until_done,
        lambda call: call("close", {}),
    ], bmd=fr.Bmd(resolve, []))  # fmt: skip
    assert log[1]["status"].startswith("Done: placed on V3"), log[1]["status"]
    assert last_settings(server)["erase"] is True
    html = page_html("DaVinci Resolve 21", "n")
    assert '<select data-field="task"><option value="edit">' in html and 'value="erase"' in html


def test_an_edit_task_without_a_prompt_is_refused_and_names_erase(tmp_path, servers, media):
    resolve = make_resolve(media, "21", True)
    items, _ = run_dialog(resolve, servers["shared"], {("Prompt", "Text"): "  "}, tmp_path)
    assert items["Status"].Text.startswith("Error: ") and "or choose the Erase task" in items["Status"].Text
    assert list(tmp_path.iterdir()) == []
    assert Form.from_values({"task": "erase"}).settings()["erase"] is True
    assert "erase" not in Form.from_values({}).settings()
    with pytest.raises(FormError, match="task must be one of edit, erase"):
        Form.from_values({"task": "remove"})


def test_the_loras_field_sends_each_lora_with_its_weight_and_refuses_a_bad_one():
    form = Form.from_values({"loras": " style:0.8, product ,"})
    assert form.settings()["loras"] == ["style:0.8", "product"]
    assert "loras" not in Form.from_values({"loras": "  "}).settings()
    for text, words in (
        ("style:heavy", "NAME:WEIGHT"),
        ("a/b", "LoRA name"),
        ("x:12", r"\[-10, 10\]"),
        ("a, a", "more than once"),
    ):
        with pytest.raises(FormError, match=f"LoRAs: .*{words}"):
            Form.from_values({"loras": text})


def test_dialog_renders_with_a_lora_the_server_lists(tmp_path, tmp_path_factory, media):
    """Check server shows the LoRAs the server offers; the LoRAs field goes out as Settings.loras and the
    job's trace names the LoRA and its weight."""
    from kvlock.loading.load import load_model

    from ..support.loras import save_lora

    loras = tmp_path_factory.mktemp("resolve-loras")
    save_lora(load_model("tiny").pipe.transformer, loras, "tiny-style", rank=4, seed=1)
    server = start(tmp_path_factory.mktemp("resolve-lora-server"), preload=["tiny"], lora_dirs=[str(loras)])
    try:
        resolve = make_resolve(media, "21", studio=True)  # Studio: the dialog (Free 19.1+ opens the page)
        items, _ = run_dialog(resolve, server, {("Loras", "Text"): "tiny-style:0.5"}, tmp_path)
        checked = Controller(resolve, server.address, server.token).server_status()  # what Check server shows
        assert checked.endswith("LoRAs: tiny-style"), checked
        assert items["Status"].Text.startswith("Done"), items["Status"].Text
        record = max(server.store.list(limit=10), key=lambda r: r.created)
        assert last_settings(server)["loras"] == [{"name": "tiny-style", "weight": 0.5}]
        trace = json.loads((server.store.folder(record.job_id) / "trace.json").read_text())
        assert [(x["name"], x["weight"]) for x in trace["loras"]] == [("tiny-style", 0.5)]
    finally:
        server.stop(grace=0)
