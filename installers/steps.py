"""The installers' one way of changing a machine: each step is printed, skipped with ``--dry-run``, safe to
repeat, and never loses a user's edit.

Every file an installer writes is recorded with its hash in ``installed.json``; writing it again replaces
it only if it still has the recorded content — a file the user changed (or one that was there before us)
is first copied to ``NAME.bak-YYYYmmdd-HHMMSS``. ``summary`` says what happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Steps:
    record_file: Path
    dry_run: bool = False
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def _say(self, text: str) -> None:
        line = f"{'would ' if self.dry_run else ''}{text}"
        print(line, flush=True)
        self.done.append(line)

    def _record(self) -> dict[str, str]:
        if self.record_file.is_file():
            return json.loads(self.record_file.read_text())
        return {}

    def _save_record(self, record: dict[str, str]) -> None:
        self.record_file.parent.mkdir(parents=True, exist_ok=True)
        self.record_file.write_text(json.dumps(record, indent=2, sort_keys=True))

    def write(self, path: Path, data: bytes | str, mode: int = 0o644) -> None:
        """Create or update ``path``; back up a file that is not what we last wrote."""
        data = data.encode() if isinstance(data, str) else data
        record = self._record()
        if path.is_file():
            current = path.read_bytes()
            if current == data:
                self._say(f"keep {path} (unchanged)")
                if not self.dry_run:
                    path.chmod(mode)
                    record[str(path)] = digest(data)
                    self._save_record(record)
                return
            if record.get(str(path)) != digest(current):
                backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
                self._say(f"back up {path} (changed since it was installed) to {backup.name}")
                if not self.dry_run:
                    shutil.copy2(path, backup)
            self._say(f"update {path}")
        else:
            self._say(f"create {path}")
        if self.dry_run:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_bytes(data)
        temp.chmod(mode)
        os.replace(temp, path)
        record[str(path)] = digest(data)
        self._save_record(record)

    def copy(self, source: Path, target: Path, mode: int = 0o644) -> None:
        self.write(target, source.read_bytes(), mode)

    def remove(self, path: Path) -> None:
        """Remove a file we installed; one the user changed is kept as a backup instead of deleted."""
        record = self._record()
        if not path.exists():
            self._say(f"skip {path} (not there)")
            return
        if path.is_file() and record.get(str(path)) not in (None, digest(path.read_bytes())):
            backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
            self._say(f"keep your edited {path.name} as {backup.name}")
            if not self.dry_run:
                path.replace(backup)
        else:
            self._say(f"remove {path}")
            if not self.dry_run:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if not self.dry_run:
            record.pop(str(path), None)
            self._save_record(record)

    def run(self, command: Sequence[str], why: str, execute: bool = True) -> None:
        """Run a command (or, with ``execute`` false, print it for the user to run)."""
        shown = " ".join(f'"{c}"' if " " in c else c for c in command)
        if not execute:
            print(f"leave for you to run ({why}): {shown}", flush=True)
            self.left.append(shown)
            return
        self._say(f"run ({why}): {shown}")
        if not self.dry_run:
            try:
                subprocess.run(list(command), check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SystemExit(f"failed: {shown} ({exc}); the steps before it are done, nothing after it") from None

    def note(self, text: str) -> None:
        """Information for the reader (not an action)."""
        print(text, flush=True)

    def summary(self, what: str) -> None:
        changed = [d for d in self.done if not d.startswith(("keep", "would keep", "skip", "would skip"))]
        verb = "Would change" if self.dry_run else "Changed"
        line = f"\n{what}: {verb} {len(changed)} thing(s); {len(self.done) - len(changed)} already in place."
        if self.left:
            line += f" {len(self.left)} command(s) above are left for you to run."
        print(line)
