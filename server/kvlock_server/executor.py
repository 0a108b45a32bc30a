"""Where jobs run. The in-process executor keeps one loaded editor per (model, slot) on this machine's GPU.

Each concurrent slot has its own editor because an editor's attention processors share one K/V bank:
two jobs on one editor at once would read each other's keys. The model is loaded on first use and kept.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from kvlock import Editor
from kvlock.acceleration import Acceleration
from kvlock.catalog import resolve_model

from .job_media import ResultFile, build_request, write_results
from .jobs import JobSpec

Progress = Callable[[dict[str, Any]], None]


class InProcessExecutor:
    def __init__(
        self,
        device: str = "cpu",
        dtype: str = "float32",
        model_dirs: Iterable[str] = (),
        acceleration: Acceleration | None = None,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.acceleration = acceleration
        self.model_dirs = list(model_dirs)
        self._editors: dict[tuple[str, int], Editor] = {}
        self._lock = threading.Lock()

    def resolve(self, model: str) -> str:
        return resolve_model(model, self.model_dirs)

    def editor(self, model: str, slot: int = 0) -> Editor:
        key = (self.resolve(model), slot)
        with self._lock:
            if key not in self._editors:
                self._editors[key] = Editor.from_pretrained(key[0], self.device, self.dtype, self.acceleration)
            return self._editors[key]

    def loaded(self) -> set[str]:
        with self._lock:
            return {model for model, _ in self._editors}

    def run(
        self,
        spec: JobSpec,
        folder: Path,
        slot: int,
        progress: Progress,
        cancel: threading.Event,
        want_preview: Callable[[int, int], bool],
    ) -> list[ResultFile]:
        request, warnings, timecode = build_request(spec, folder)
        editor = self.editor(spec.model, slot)

        def report(info: dict[str, Any]) -> None:
            event = {k: v for k, v in info.items() if k not in ("latents", "x0")}
            if want_preview(info["step"], info["total"]):
                event["preview_png"] = png_bytes(editor.preview(info["x0"]))
            progress(event)

        try:
            result = editor.edit(request, progress=report, cancel=cancel)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        result.trace.warnings[:0] = warnings
        return write_results(result, spec, folder, timecode)


def png_bytes(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
