"""Does what SmolLM2 learnt on the demo transfer to real databases? (issue 18, part 4)

    python scripts/spider_transfer.py --sft out/demo-real/sft        # after `make demo-real` (or its sft step)

On the Spider sample in ../shared/data (4 real Spider dev databases, none in the demo's training data):
  1. EX of SmolLM2-135M-Instruct zero-shot (the GGUF, prompted as the SFT recipe prompts) and after SFT on the
     demo, on all 259 questions;
  2. GRPO from that SFT model on the questions of two databases (car_1, flight_2), then all three models on the
     other two (concert_singer, pets_1): held out by database, so no schema or value the RL step saw is asked;
  3. every EX with its 95% bootstrap interval and every "better" with a paired test (McNemar, paired bootstrap),
     from the same functions `compare` uses. Writes OUT/transfer.md and OUT/transfer.json.

Each model is scored by `nl2sql-align eval` and trained by `nl2sql-align grpo`, each its own process, so the
numbers are the tool's own. Nothing here is tuned: the GRPO settings are recipes/smollm2-grpo.toml's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "spider_sample"
GGUF_RECIPE = REPO / "recipes" / "smollm2-sft-full.toml"  # names the GGUF and the prompt SFT trained with
TRAIN_DBS = ("car_1", "flight_2")
HELDOUT_DBS = ("concert_singer", "pets_1")


def split_by_database(sample: Path, out: Path, train_dbs=TRAIN_DBS, heldout_dbs=HELDOUT_DBS) -> dict[str, Path]:
    """A Spider layout at `out` (links to the sample's databases and tables.json) with two split files:
    train.json (the questions of `train_dbs`) and heldout.json (those of `heldout_dbs`), records unchanged."""
    if set(train_dbs) & set(heldout_dbs):
        raise ValueError(f"a database is on both sides: {sorted(set(train_dbs) & set(heldout_dbs))}")
    records = json.loads((sample / "dev.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("database", "tables.json"):
        link = out / name
        if not link.exists():
            link.symlink_to((sample / name).resolve())
    files = {}
    for split, dbs in (("train", train_dbs), ("heldout", heldout_dbs)):
        chosen = [r for r in records if r["db_id"] in dbs]
        missing = set(dbs) - {r["db_id"] for r in chosen}
        if missing:
            raise ValueError(f"{sample}/dev.json has no questions on {sorted(missing)}")
        files[split] = out / f"{split}.json"
        files[split].write_text(json.dumps(chosen, indent=1), encoding="utf-8")
    return files


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "nl2sql_align", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def evaluate(model: str, data: str, report: Path, recipe: Path | None) -> None:
    if (report / "summary.json").is_file():
        return  # scored already: rerunning the script resumes
    cli(
        "eval",
        "--model",
        model,
        "--data",
        data,
        "--report",
        str(report),
        "--overwrite",
        *(["--recipe", str(recipe)] if recipe else []),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft", required=True, help="the SFT model folder (trained on the demo)")
    ap.add_argument("--out", type=Path, default=Path("out/transfer"))
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--grpo-steps", type=int, default=30)
    args = ap.parse_args()

    from nl2sql_align.compare import correct_vector
    from nl2sql_align.recipe import load_recipe
    from nl2sql_align.stats import paired_comparison

    out = args.out.resolve()
    args.sft = str(Path(args.sft).resolve())  # the commands below run in the repository root
    files = split_by_database(args.sample, out / "spider")
    gguf = load_recipe(GGUF_RECIPE).model.name_or_path
    data_all, data_held = f"spider:{args.sample}", f"spider:{files['heldout']}"

    evaluate(gguf, data_all, out / "zero-shot-all", GGUF_RECIPE)
    evaluate(args.sft, data_all, out / "sft-all", None)
    grpo = out / "grpo"
    if not any((grpo / f).is_file() for f in ("adapter_model.safetensors", "model.safetensors")):  # not finished
        cli(
            "grpo",
            "--recipe",
            "recipes/smollm2-grpo.toml",
            "--overwrite",
            "--set",
            f'model.name_or_path="{args.sft}"',
            "--set",
            f'output_dir="{grpo}"',
            "--set",
            f'data.train="spider:{files["train"]}"',
            "--set",
            f'data.eval="{data_held}"',
            "--set",
            f"train.max_steps={args.grpo_steps}",
            "--set",
            "eval.after_training=false",
        )
    evaluate(gguf, data_held, out / "zero-shot-heldout", GGUF_RECIPE)
    evaluate(args.sft, data_held, out / "sft-heldout", None)
    evaluate(str(grpo), data_held, out / "grpo-heldout", None)

    result: dict = {"sample": str(args.sample), "train_dbs": TRAIN_DBS, "heldout_dbs": HELDOUT_DBS, "rows": []}
    lines = [
        f"| model | Spider sample, all {len(correct_vector(out / 'sft-all'))} | held-out databases, "
        f"{len(correct_vector(out / 'sft-heldout'))} | Δ vs previous row (all) | p | Δ vs previous row (held out) | p |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    prev = prev_all = None
    for name, all_dir, held_dir in (
        ("zero-shot", out / "zero-shot-all", out / "zero-shot-heldout"),
        ("after SFT on the demo", out / "sft-all", out / "sft-heldout"),
        (f"after GRPO on {' + '.join(TRAIN_DBS)}", None, out / "grpo-heldout"),
    ):
        held = correct_vector(held_dir)
        every = correct_vector(all_dir) if all_dir is not None else None
        row = {"model": name, "heldout": _ex(held)}
        cells = ["-", _cell(row["heldout"])]
        if every is not None:
            row["all"] = _ex(every)
            cells[0] = _cell(row["all"])
        for key, before, now in (("vs_previous_all", prev_all, every), ("vs_previous_heldout", prev, held)):
            if before is None or now is None:
                cells += ["-", "-"]
                continue
            cmp = paired_comparison(before, now)
            row[key] = cmp
            lo, hi = cmp["diff_ci"]
            cells += [f"{cmp['diff']:+.1f} [{lo:+.1f}, {hi:+.1f}] ({cmp['wins']}/{cmp['losses']})", _p(cmp["p"])]
        result["rows"].append(row)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        prev, prev_all = held, every
    (out / "transfer.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    (out / "transfer.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def _ex(vec: list[bool]) -> dict:
    from nl2sql_align.stats import accuracy, bootstrap_ci

    return {"n": len(vec), "ex": accuracy(vec), "ci": list(bootstrap_ci(vec))}


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _cell(r: dict) -> str:
    return f"{r['ex']:.1f} [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}]"


if __name__ == "__main__":
    sys.exit(main())
