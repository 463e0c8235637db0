"""Output folders: nothing a user has is replaced without --overwrite."""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.errors import UserError


def refuse_existing(path: Path, overwrite: bool, option: str) -> None:
    """A non-empty folder (or a file) at `path` stops the command unless --overwrite was given."""
    path = Path(path)
    if overwrite or not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise UserError(f"{option} {path} already exists and is not empty; pass --overwrite to replace what is there")
