"""One logging setup for every command: messages go to stderr (stdout carries only results), through rich on a
terminal and as plain lines in a log file or a pipe (CI, nohup, SLURM), where rich would wrap long paths."""

from __future__ import annotations

import logging
import sys
import warnings


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: bool = False) -> None:
    """Idempotent: the package's loggers get one handler on stderr."""
    root = logging.getLogger("nl2sql_align")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_libraries()
    if any(getattr(h, "_nl2sql_align", False) for h in root.handlers):
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter("%(message)s"))
    handler._nl2sql_align = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False


def quiet_libraries() -> None:
    """Library noise that says nothing to our users, silenced at its source: bitsandbytes' CPU kernel lookup and
    the kernels hub's offline notice (every QLoRA-capable import prints them), sqlglot's parse warnings on
    model-written junk (the guard reports those itself), and transformers' deprecation warnings for the
    gradient_checkpointing names that TRL's own configs and trainers still use."""
    for name in ("bitsandbytes", "kernels", "sqlglot"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for old in (
        "gradient_checkpointing",
        "is_gradient_checkpointing",
        "gradient_checkpointing_enable",
        "gradient_checkpointing_disable",
        "gradient_checkpointing_kwargs",
    ):
        warnings.filterwarnings("ignore", message=f"`{old}` is deprecated", category=FutureWarning)
