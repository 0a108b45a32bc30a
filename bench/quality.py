"""Edit quality of KV-Lock and its baselines on the synthetic world's edit cases, with the shipped model.

    python bench/quality.py                                    # test split, every method (CPU: hours)
    python bench/quality.py --device cuda --workers 14 --calibrate --json out.json   # the full run
    python bench/quality.py --choose source_plate --methods "no lock, clean plate" …   # one knob's default
    python bench/quality.py --erase 48 --methods                                      # erase cases only

``--calibrate`` first chooses the defaults on the calibration split (never on the test split), then runs
the test split with them:

  A. h under a firm lock (α = 1, b = 1), once per W → a starting τ for every (W, κ) and quantile; then, for
     the base (W, κ), each quantile's τ refitted with the control live at it until it settles
     (``kvlock.calibration``'s rule), other (W, κ) moved by the same ratio;
  B. τ = the settled 0.25 / 0.5 / 0.75 quantile → the quantile rule (the last round's edits are its rows);
  C. one knob at a time from there: W, κ, b, α_early, ω form, uncond source, and the method itself (no
     lock and fixed α = 0.5 compete with the adaptive lock: the default is whichever the rule picks).

Selection rule: among the candidates, those whose accuracy (every attribute right) is within 0.02 of the
best candidate's; of these the one with the highest mean leftover PSNR (the failure KV-Lock exists to
prevent); the incumbent wins ties. In B the candidates are the quantiles; in C they are every single-knob
variant plus the incumbent, and the winner is one configuration that was itself measured — knobs chosen
one by one and then combined were never measured together (the 2026-12-01 run did that and landed on
κ = W, a configuration in which the control can never act). Variants in which the metric window can
never fill inside the control window (κ ≤ W) are not candidates. Then every method of ``METHODS`` runs on
the test split, each as one change to the chosen defaults, on the same cases and seeds. Cases run in
parallel worker processes (``--workers``), each with its own model.

``--choose KNOB`` applies the same rule to one decision alone, on the calibration split: the value shipped now
(``BASE``) against each candidate of ``CHOICES[KNOB]``; the winner is added to the defaults the test split
then runs with, and ``--report FILE --write-schedule FOLDER`` stores it in the model's schedule beside what
is there.
``--erase N`` also runs N erase cases of the split (``kvlock.world.cases.make_erase_case``) with every method
of ``ERASE_METHODS`` and prints their PSNR inside the matte, split into the pixels the clean plate saw in
another frame and those it invented.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import queue
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "server")]

from kvlock.calibration import TOLERANCE, tau_from_samples, write_calibration  # noqa: E402
from kvlock.settings import IGNORED_BY, SCHEDULE_DEFAULTS  # noqa: E402
from kvlock.world.benchmark import (  # noqa: E402
    ERASE_METHODS,
    METHODS,
    PAIRED_KEYS,
    paired_differences,
    summarise,
    summarise_erase,
)
from kvlock.world.following import ATTRIBUTES  # noqa: E402

QUANTILES = (0.25, 0.5, 0.75)
TAU_ROUNDS = 3  # in-regime rounds of phase A (the last one is phase B)
BASE = {
    "method": "kvlock",
    "metric_window": 10,
    "kappa": 20,
    "b": 2.0,
    "alpha_early": 1.0,
    "guidance_form": "kvlock",
    "strength": 1.0,
    "source_plate": "original",
}
KNOBS = {
    "metric_window": [5],
    "kappa": [10, 30],
    "b": [1.0, 3.0],
    "alpha_early": [0.0, 0.5],
    "guidance_form": ["paper", "static"],
    "uncond_source": ["own"],
    # the baselines are candidates too: if the lock does not help a model, its default should not lock
    "method": ["no_lock", "fixed_alpha=0.5"],
    # where denoising starts: from the noised source rather than pure noise (the embedded model ships 0.8)
    "strength": [0.8],
    # what the edit starts from inside the matte and the source pass sees: the source or its clean plate
    "source_plate": ["clean"],
}


def _worker(device: str, model: str, jobs, results) -> None:
    import cv2

    import kvlock.world  # noqa: F401  (registers the test models)
    from kvlock import Editor
    from kvlock.world.benchmark import run_case, run_erase_case
    from kvlock.world.cases import make_case, make_erase_case
    from kvlock.world.following import judge_prompt

    cv2.setNumThreads(1)  # the clean plate's OpenCV: one thread per worker, as OMP_NUM_THREADS=1 gives torch
    editor = Editor.from_pretrained(model, device=device)
    cases = {}
    for tag, split, index, overrides, steps in iter(jobs.get, None):
        try:
            if split == "following":  # a plain text-to-video prompt, judged per attribute
                results.put((tag, judge_prompt(editor, index, steps)))
                continue
            if split.startswith("erase:"):  # an erase case, scored against the scene without the object
                case = make_erase_case(split.removeprefix("erase:"), index)
                results.put((tag, run_erase_case(editor, case, overrides["erase_method"], steps)))
                continue
            key = (split, index)
            if key not in cases:
                cases[key] = make_case(split, index)
            results.put((tag, run_case(editor, cases[key], overrides, steps)))
        except Exception as error:  # a failed case is reported with its reason, never silently dropped
            results.put((tag, {"case": f"{split}-{index}", "error": f"{type(error).__name__}: {error}"}))


class Pool:
    """Worker processes fed (tag, split, case, overrides, steps) jobs; ``run`` returns rows per tag."""

    def __init__(self, workers: int, device: str, model: str, deadline: float = math.inf) -> None:
        self.deadline = deadline  # time.time() after which results stop being waited for
        self.late = False
        ctx = mp.get_context("spawn")
        self.jobs, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [
            ctx.Process(target=_worker, args=(device, model, self.jobs, self.results)) for _ in range(workers)
        ]
        for p in self.procs:
            p.start()

    def run(self, jobs: list[tuple]) -> dict[str, list[dict]]:
        for job in jobs:
            self.jobs.put(job)
        rows: dict[str, list[dict]] = {}
        for _ in jobs:
            try:
                left = self.deadline - time.time()
                tag, row = self.results.get(timeout=max(0.1, left) if math.isfinite(left) else None)
            except queue.Empty:
                self.late = True
                print(f"  ! deadline reached: {sum(map(len, rows.values()))} of {len(jobs)} jobs done", flush=True)
                break
            if "error" in row:
                print(f"  ! {tag} {row['case']}: {row['error']}", flush=True)
                continue
            rows.setdefault(tag, []).append(row)
        for tag in rows:
            rows[tag].sort(key=lambda r: str(r.get("case", r.get("prompt"))))
        return rows

    def close(self) -> None:
        if self.late:
            for p in self.procs:
                p.terminate()
            return
        for _ in self.procs:
            self.jobs.put(None)
        for p in self.procs:
            p.join()


def _jobs(tag: str, split: str, cases: int, overrides: dict, steps: int) -> list[tuple]:
    return [(tag, split, i, dict(overrides), steps) for i in range(cases)]


def _choose(candidates: dict, rows: dict[str, list[dict]], incumbent) -> object:
    """The selection rule of the module docstring."""

    def mean(tag, key):
        values = [r[key] for r in rows.get(tag, []) if not math.isnan(r[key])]
        return sum(values) / len(values) if values else -math.inf

    accuracy = {value: mean(tag, "all") for value, tag in candidates.items()}
    best = max(accuracy.values())
    eligible = [v for v in candidates if accuracy[v] >= best - 0.02]
    leftover = {v: mean(candidates[v], "leftover_psnr") for v in eligible}
    top = max(leftover.values())
    return incumbent if incumbent in eligible and leftover[incumbent] >= top else max(leftover, key=leftover.get)


def calibrate(pool: Pool, cases: int, steps: int, log: dict) -> dict:
    """Phases A–C on the calibration split; returns the chosen overrides (τ included)."""
    # With α fixed at 1 and b = 1 nothing depends on κ or W, so one run per W at the longest κ gives every
    # (W, κ): the metric's windows inside a shorter control window are the last κ − W + 1 full ones.
    windows = sorted({BASE["metric_window"], *KNOBS["metric_window"]})
    longest = max(BASE["kappa"], *KNOBS["kappa"])
    jobs = []
    for w in windows:
        firm = {"method": "fixed_alpha=1", "b": 1.0, "metric_window": w, "kappa": longest, "strength": BASE["strength"]}
        jobs += _jobs(f"h W={w}", "calibration", cases, firm, steps)
    began = time.time()
    rows = pool.run(jobs)
    kappas = sorted({BASE["kappa"], *KNOBS["kappa"]})
    samples = {
        (w, k): [h for r in rows[f"h W={w}"] for h in r["h_full"][-(k - w + 1) :]]
        for w in windows
        for k in kappas
        if k >= w
    }
    log["phase_a"] = {f"W={w} κ={k}": {q: tau_from_samples(v, q) for q in QUANTILES} for (w, k), v in samples.items()}
    print(f"A: τ candidates {log['phase_a']} ({time.time() - began:.0f} s)", flush=True)

    base = dict(BASE)
    w0, k0 = base["metric_window"], base["kappa"]
    # the firm lock's h is only the start: h under the live control reads higher (kvlock.calibration), so
    # each quantile's τ is refitted in the control's own regime, round after round, as `kvlock calibrate` does
    taus = {q: tau_from_samples(samples[(w0, k0)], q) for q in QUANTILES}
    tags = {q: f"q={q}" for q in QUANTILES}
    rounds: list[dict] = [dict(taus)]
    for round_ in range(TAU_ROUNDS):
        jobs = []
        for q, tag in tags.items():
            jobs += _jobs(tag, "calibration", cases, {**base, "tau": taus[q]}, steps)
        rows_b = pool.run(jobs)
        fitted = {q: tau_from_samples([h for r in rows_b[tag] for h in r["h_full"]], q) for q, tag in tags.items()}
        settled = all(abs(math.log(fitted[q] / taus[q])) < TOLERANCE for q in QUANTILES)
        if settled or round_ == TAU_ROUNDS - 1:
            break  # rows_b are the rows of τ as it stands: phase B's candidates
        taus = fitted
        rounds.append(dict(taus))
    log["phase_a_rounds"] = rounds
    print(f"A: τ per quantile in the control's regime, by round: {rounds}", flush=True)

    def tau_for(w: int, k: int, q: float) -> float:
        """Another (W, κ)'s τ: its firm-lock τ moved by the ratio the base configuration's rounds found."""
        return tau_from_samples(samples[(w, k)], q) * taus[q] / rounds[0][q]

    quantile = _choose(tags, rows_b, 0.5)
    log["phase_b"] = {tag: summarise(rows_b[tag]) for tag in tags.values()}
    print(f"B: quantile {quantile} ({time.time() - began:.0f} s)", flush=True)
    base["quantile"] = quantile
    incumbent_tag = tags[quantile]

    candidates, jobs = {"incumbent": incumbent_tag}, []
    trials = {incumbent_tag: {k: v for k, v in base.items() if k != "quantile"}}
    for knob, values in KNOBS.items():
        for value in values:
            trial = {k: v for k, v in {**base, knob: value}.items() if k != "quantile"}
            if trial["kappa"] <= trial["metric_window"]:
                continue  # the metric window could never fill inside the control window
            tag = f"{knob}={value}"
            candidates[tag], trials[tag] = tag, trial
            trial["tau"] = tau_for(trial["metric_window"], trial["kappa"], quantile)
            jobs += _jobs(tag, "calibration", cases, trial, steps)
    trials[incumbent_tag]["tau"] = tau_for(base["metric_window"], base["kappa"], quantile)
    rows_c = {**pool.run(jobs), incumbent_tag: rows_b[incumbent_tag]}
    winner = _choose(candidates, rows_c, "incumbent")
    chosen = trials[candidates[winner]]
    log["phase_c"] = {tag: summarise(r) for tag, r in rows_c.items()}
    log["chosen"] = {**chosen, "quantile": quantile, "winner": candidates[winner]}
    print(f"C: chosen {log['chosen']} ({time.time() - began:.0f} s)", flush=True)
    return chosen


# --choose KNOB: the candidates beside the incumbent (BASE[KNOB]); each a change to the model's defaults. A clean
# plate takes the old subject out of the edit's start, and with it the layout strength < 1 keeps, so the start's
# strength competes with it (at 1 the start is pure noise and the plate acts through the source pass alone).
CHOICES: dict[str, list[dict]] = {
    "source_plate": [
        {"source_plate": "clean"},
        {"source_plate": "clean", "strength": 0.9},
        {"source_plate": "clean", "strength": 1.0},
    ],
}


def choose(pool: Pool, knob: str, cases: int, steps: int, log: dict) -> dict:
    """``--choose KNOB``: the rule of the module docstring over the knob's candidates (``CHOICES``) and the
    value shipped now (``BASE``, the incumbent), on the calibration split; returns the winner's overrides."""
    if knob not in CHOICES:
        raise SystemExit(f"--choose takes one of {', '.join(CHOICES)}, not {knob!r}")
    incumbent = {knob: BASE[knob]}
    trials = {_tag(t): t for t in (incumbent, *CHOICES[knob])}
    began = time.time()
    jobs = [job for tag, trial in trials.items() for job in _jobs(tag, "calibration", cases, trial, steps)]
    rows = pool.run(jobs)
    winner = _choose({tag: tag for tag in trials}, rows, _tag(incumbent))
    log["choose"] = {tag: summarise(rows[tag]) for tag in trials if tag in rows}
    log["choose_rows"] = rows
    log["chosen"] = {**trials[winner], "winner": winner, "merge": True}
    print(f"chose {winner} on {cases} calibration cases ({time.time() - began:.0f} s)", flush=True)
    return dict(trials[winner])


def _tag(trial: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in trial.items())


def _cell(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 3:
        estimate, low, high = value
        if math.isnan(estimate):
            return "—"
        digits = 3 if abs(estimate) < 10 else 1
        return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return str(value)


QUALITY_COLUMNS = {
    "all": "all right",
    "colour": "colour",
    "shape": "shape",
    "size": "size",
    "motion": "motion",
    "in_matte_psnr": "in-matte PSNR",
    "leftover_psnr": "leftover PSNR",
    "bg_psnr_raw": "bg PSNR raw",
    "bg_ssim_raw": "bg SSIM raw",
}
DIAGNOSTIC_COLUMNS = {
    "flicker_bg": "flicker bg",
    "flicker_fg": "flicker fg",
    "h_success": "h right",
    "h_failure": "h wrong",
    "h_auc": "h AUC",
    "alpha_range": "α range",
    "alpha_inside": "α inside (0, 1)",
    "seconds": "s/edit",
}


def print_table(table: dict, title: str) -> None:
    """Two markdown tables (quality, diagnostics); every cell is estimate [95 % interval]."""
    for columns, suffix in ((QUALITY_COLUMNS, ""), (DIAGNOSTIC_COLUMNS, " — diagnostics")):
        print(f"\n# {title}{suffix}")
        extra = ["cases"] + (["outside exact"] if suffix else [])
        print("| method | " + " | ".join([*extra, *columns.values()]) + " |")
        print("|---|" + "|".join("---" for _ in [*extra, *columns]) + "|")
        for name, s in table.items():
            cells = [str(s["cases"])] + ([str(s["outside_exact"])] if suffix else [])
            print(f"| {name} | " + " | ".join([*cells, *(_cell(s[k]) for k in columns)]) + " |")


PAIRED_REFERENCES = ("defaults", "kvlock", "no lock", "kvlock, original plate", "no lock, original plate")


def print_paired(rows: dict, references: tuple[str, ...] = PAIRED_REFERENCES) -> None:
    """Each method against each reference, case by case (same cases, same seeds)."""
    for reference in references:
        if reference not in rows:
            continue
        print(f"\n# paired against {reference}: mean difference over the same cases [95 % interval]")
        print("| method | cases | Δ leftover PSNR | Δ all right | Δ colour | Δ in-matte PSNR | Δ bg PSNR raw |")
        print("|---|---|---|---|---|---|---|")
        for name, method_rows in rows.items():
            if name == reference:
                continue
            d = paired_differences(method_rows, rows[reference])
            cells = " | ".join(_cell(d[k]) for k in PAIRED_KEYS)
            print(f"| {name} | {d['cases']} | {cells} |")


ERASE_COLUMNS = {
    "in_matte_psnr": "in-matte PSNR",
    "seen_psnr": "seen PSNR",
    "invented_psnr": "invented PSNR",
    "seen_fraction": "seen",
    "seconds": "s/erase",
}


def print_erase_table(table: dict, title: str) -> None:
    """Erase cases against the scene without the object; every cell is estimate [95 % interval]."""
    print(f"\n# {title}")
    print("| method | cases | outside exact | " + " | ".join(ERASE_COLUMNS.values()) + " |")
    print("|---|---|---|" + "|".join("---" for _ in ERASE_COLUMNS) + "|")
    for name, s in table.items():
        cells = [str(s["cases"]), str(s["outside_exact"]), *(_cell(s[k]) for k in ERASE_COLUMNS)]
        print(f"| {name} | " + " | ".join(cells) + " |")


def report_against(path: Path, other: Path) -> None:
    """Each method of one run against each method of another run on the same split, case by case: the same
    cases and seeds, e.g. the 4-step model's edits against the 50-step model's."""
    mine, theirs = (json.loads(p.read_text())["test_rows"] for p in (path, other))
    for reference, reference_rows in theirs.items():
        print(f"\n# {path.name} paired against {other.name}'s {reference}: mean difference [95 % interval]")
        print("| method | cases | Δ leftover PSNR | Δ all right | Δ colour | Δ in-matte PSNR | Δ bg PSNR raw |")
        print("|---|---|---|---|---|---|---|")
        for name, rows in mine.items():
            d = paired_differences(rows, reference_rows)
            print(f"| {name} | {d['cases']} | " + " | ".join(_cell(d[k]) for k in PAIRED_KEYS) + " |")


def report(path: Path) -> None:
    """Print the tables of an earlier run's JSON (calibration phases, test split, prompt following)."""
    log = json.loads(path.read_text())
    for phase in ("phase_b", "phase_c"):
        if phase in log:
            print_table(log[phase], f"calibration split, {phase[-1].upper()}: {log['args']['calibration_cases']} cases")
    if "choose" in log:
        print_table(
            log["choose"],
            f"calibration split, --choose {log['args']['choose']}: {log['args']['calibration_cases']} cases",
        )
        print_paired(log["choose_rows"], references=tuple(log["choose"])[:1])
    if "chosen" in log:
        print(f"\nchosen: {log['chosen']}")
    if "test" in log:
        split = log["args"].get("split", "test")
        print_table(log["test"], f"{split} split ({log['date']}, {log['machine']} {log['args']['device']})")
        print_paired(log["test_rows"])
    if log.get("erase"):
        print_erase_table(log["erase"], f"erase cases, {split} split ({log['date']}, {log['args']['device']})")
    if log.get("following_summary"):
        print(f"\n# text-to-video prompt following, {len(log['following'])} held-out prompts:")
        print("| " + " | ".join(log["following_summary"]) + " |")
        print("|" + "---|" * len(log["following_summary"]))
        print("| " + " | ".join(f"{v:.2f}" for v in log["following_summary"].values()) + " |")


def write_schedule(log: dict, folder: Path) -> Path:
    """Store the schedule a --calibrate run chose in the model folder's kvlock.json, where every edit that
    leaves the lock's settings unset finds it; knobs the chosen method ignores are not stored."""
    chosen = log["chosen"]
    how = f"--choose {log['args']['choose']}" if chosen.get("merge") else "--calibrate"
    source = (
        f"bench/quality.py {how} {log['date']} ({log['args']['device']}): calibration split, "
        f"{log['args']['calibration_cases']} cases, {log['args']['steps']} steps; winner {chosen['winner']}"
    )
    if chosen.get("merge"):  # one knob chosen on its own: added to the schedule the folder has
        path = Path(folder) / "kvlock.json"
        existing = json.loads(path.read_text()) if path.is_file() else {}
        chosen = {**existing.get("schedule", {}), **chosen}
        earlier = existing.get("schedule_source")
        source = f"{earlier}; {source}" if earlier else source
    method = chosen.get("method", SCHEDULE_DEFAULTS["method"])
    ignored = IGNORED_BY.get(method, ())
    schedule = {k: chosen[k] for k in SCHEDULE_DEFAULTS if k in chosen and k not in ignored}
    return write_calibration(folder, {"schedule": schedule, "schedule_source": source})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's --json file and stop")
    parser.add_argument("--against", type=Path, help="with --report: pair its methods with another run's, case by case")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--split", default="test", choices=("test", "calibration"))
    parser.add_argument("--cases", type=int, default=72)
    parser.add_argument("--calibration-cases", type=int, default=24)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--calibrate", action="store_true", help="choose the defaults on the calibration split first")
    parser.add_argument("--choose", metavar="KNOB", help="choose one knob's default on the calibration split first")
    parser.add_argument("--erase", type=int, default=0, help="also run N erase cases of the split")
    parser.add_argument("--erase-methods", nargs="*", default=list(ERASE_METHODS))
    parser.add_argument("--defaults", help="a JSON file of chosen overrides (from an earlier --calibrate run)")
    parser.add_argument("--following", type=int, default=0, help="also judge N held-out text-to-video prompts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="write every row and summary here (rewritten after each phase)")
    parser.add_argument("--deadline", type=float, default=math.inf, help="seconds after which to stop waiting")
    parser.add_argument(
        "--write-schedule",
        type=Path,
        metavar="FOLDER",
        help="store the chosen schedule in FOLDER/kvlock.json (with --calibrate, or --report of such a run)",
    )
    args = parser.parse_args()
    if args.report:
        report(args.report)
        if args.against:
            report_against(args.report, args.against)
        if args.write_schedule:
            print(f"schedule written to {write_schedule(json.loads(args.report.read_text()), args.write_schedule)}")
        return
    log: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d"), "machine": platform.machine()}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(log, indent=1, default=str))

    began = time.time()
    pool = Pool(args.workers, args.device, args.model, began + args.deadline)
    try:
        chosen = json.loads(Path(args.defaults).read_text()) if args.defaults else {}
        if args.calibrate:
            chosen = calibrate(pool, args.calibration_cases, args.steps, log)
        elif args.choose:
            chosen = {**chosen, **choose(pool, args.choose, args.calibration_cases, args.steps, log)}
        if args.calibrate or args.choose:
            save()
            if args.write_schedule:
                print(f"schedule written to {write_schedule(log, args.write_schedule)}", flush=True)
        jobs = [("following", "following", i, {}, None) for i in range(args.following)]
        for i in range(args.cases if args.methods else 0):  # case-major: a run cut short covers every method
            for name in args.methods:
                jobs.append((name, args.split, i, {**chosen, **METHODS[name]}, args.steps))
        for i in range(args.erase):
            for name in args.erase_methods:
                jobs.append((f"erase: {name}", f"erase:{args.split}", i, {"erase_method": name}, args.steps))
        rows = pool.run(jobs)
        following = rows.pop("following", [])
        erase = {name: rows.pop(f"erase: {name}") for name in args.erase_methods if f"erase: {name}" in rows}
        table = {name: summarise(rows[name]) for name in args.methods if name in rows}
        log.update(test_rows=rows, test=table, following=following)
        save()
        print_table(
            table,
            f"{args.split} split, {args.cases} cases, {args.steps} steps, model {args.model}, "
            f"defaults {chosen or 'as shipped'}, {platform.machine()} {args.device}, {time.strftime('%Y-%m-%d')}, "
            f"{time.time() - began:.0f} s",
        )
        print_paired(rows)
        if erase:
            log["erase_rows"], log["erase"] = erase, {name: summarise_erase(r) for name, r in erase.items()}
            save()
            print_erase_table(log["erase"], f"erase cases, {args.split} split, {args.erase} cases, {args.steps} steps")
        if following:
            summary = {a: sum(r[a] for r in following) / len(following) for a in (*ATTRIBUTES, "all")}
            log["following_summary"] = summary
            save()
            print(f"\n# text-to-video prompt following, {len(following)} held-out prompts: {summary}")
    finally:
        pool.close()


if __name__ == "__main__":
    main()
