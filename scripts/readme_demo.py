"""Write the demo's comparison into README.md, between the demo-report markers, from the summary.json that
`make demo` (nl2sql-align demo) wrote: the table as produced, the machine, the date and the step times.

    python scripts/readme_demo.py                      # after `make demo`; reads out/demo/compare/summary.json

Nothing is typed in by hand: rerun the demo, rerun this, and the README shows the new measurements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from nl2sql_align.compare import result_tables, step_times
from nl2sql_align.seeds import seed_markdown

START, END = "<!-- demo-report:start -->", "<!-- demo-report:end -->"


def section(summary: dict, measured: str) -> str:
    m, pipe = summary["machine"], summary.get("pipeline") or {}
    lines = [
        START,
        f"Measured {measured} on {m['platform']}, Python {m['python']}, {m['cpus']} CPUs, {m['gpu']}, by "
        f"`{summary['command']}`; {summary['n']} questions of `{summary['data']}`, {summary['metric']} semantics.",
        "",
        *result_tables(summary["runs"]),
        *[line.replace("## ", "") for line in seed_markdown(summary)],  # a paragraph here, not a heading
        "",
    ]
    if pipe:
        seeds = f" x {summary['seeds']} seeds" if summary.get("seeds", 1) > 1 else ""
        lines.append(
            f"Wall time {pipe['total_seconds'] / 60:.1f} min without the install ({step_times(pipe)}; scoring the "
            f"{len(summary['runs'])} policies{seeds} {pipe['compare_seconds']:.0f} s)."
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", type=Path, default=Path("out/demo/compare/summary.json"))
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    if not args.summary.is_file():
        print(f"{args.summary}: not found; run `make demo` first", file=sys.stderr)
        return 2
    summary = json.loads(args.summary.read_text(encoding="utf-8"))
    text = args.readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{args.readme}: no {START} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    measured = dt.datetime.fromtimestamp(args.summary.stat().st_mtime).strftime("%Y-%m-%d")
    new = section(summary, measured)
    args.readme.write_text(head + new + tail, encoding="utf-8")
    print(f"{args.readme}: demo report updated from {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
