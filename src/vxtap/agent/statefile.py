"""The last desired state the agent applied, kept on disk across restarts and server outages."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from vxtap.model import DesiredState

STATE_FILE = "desired-state.json"


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def load(self) -> DesiredState | None:
        """The saved state, or None when there is none; a corrupt file is an error naming it."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return DesiredState.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the document"
            raise ValueError(
                f"{self.path} is not a saved desired state ({where}: {first['msg']})"
            ) from exc

    def save(self, state: DesiredState) -> None:
        """Write atomically (temp file, fsync, rename) so a crash leaves the old or the new file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".desired-state.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(state.model_dump_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only when empty: the directory may hold the user's files
