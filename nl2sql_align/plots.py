"""PNG plots written next to the outputs, so a user can look at a run without a dashboard."""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# Preference stages: DPO-family implicit-reward margins and accuracies, the reward model's pairwise ones.
_PREFERENCE_KEYS = ("rewards/margins", "rewards/accuracies", "accuracy", "margin", "eval_accuracy", "eval_margin")


_PPO_KEYS = ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy", "approx_kl")


def plot_training(metrics_path: Path, out_dir: Path, run_name: str | None = None) -> list[Path]:
    """One PNG per logged curve family: loss (train and eval), every `rewards/*` / `reward*` series together,
    one per reward component (`reward_<name>.png`: components have different scales), and the preference
    margins/accuracies of rm and dpo (`preference.png`),
    ppo's KL (`kl.png`) and loss parts (`ppo.png`)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = []
    groups = {
        "loss": [k for k in ("loss", "eval_loss") if any(k in r for r in rows)],
        "rewards": sorted({k for r in rows for k in r if k.startswith(("reward", "rewards/")) and k.endswith("mean")}),
        "preference": [k for k in _PREFERENCE_KEYS if any(k in r for r in rows)],
        # ppo: KL to the reference (and its coefficient), and the parts of the loss.
        "kl": [k for k in ("kl", "kl_coef") if any(k in r for r in rows)],
        "ppo": [k for k in _PPO_KEYS if any(k in r for r in rows)],
    }
    for key in groups["rewards"]:
        if key.startswith("rewards/"):
            groups["reward_" + key.split("/")[1]] = [key]
    for name, keys in groups.items():
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=2, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(f"{name} ({run_name or metrics_path.parent.name})")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_ex_comparison(labels: list[str], values: list[float], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(labels)), 4))
    bars = ax.bar(labels, values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylim(0, 100)
    ax.set_ylabel("execution accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ex_by_level(summary: dict, path: Path, title: str | None = None) -> Path:
    """EX per hardness level from an eval summary (`evaluate.summarize`): "all", each level, and "complex"
    (hard + extra) when present, each bar labelled with its EX and its number of examples."""
    groups = [("all", summary)] + list(summary.get("ex_by_hardness", {}).items())
    if "ex_complex" in summary:
        groups.append(("complex\n(hard+extra)", summary["ex_complex"]))
    colors = (
        ["#55a868"] + ["#4c72b0"] * len(summary.get("ex_by_hardness", {})) + ["#dd8452"] * ("ex_complex" in summary)
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(groups)), 4))
    bars = ax.bar([name for name, _ in groups], [g["ex"] for _, g in groups], color=colors)
    ax.bar_label(bars, labels=[f"{g['ex']:.1f}\nn={g['n']}" for _, g in groups], fontsize=8)
    ax.set_ylim(0, 110)  # room for the two-line labels above a bar at 100
    ax.set_ylabel("execution accuracy (%)")
    ax.set_title(title or f"EX ({summary['metric']}) per hardness level, n={summary['n']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------
# `compare --runs`: several runs side by side (records as written by nl2sql_align.compare.run_record)


def plot_compare_ex(records: list[dict], path: Path, title: str) -> Path:
    """Grouped bars: for each run, EX overall and per hardness level."""
    plt = _pyplot()
    levels = ["all", *dict.fromkeys(k for r in records for k in r.get("ex_by_hardness", {}))]
    width = 0.8 / max(1, len(records))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(levels) * max(1, len(records)) ** 0.5 + 2), 4))
    for i, r in enumerate(records):
        values = [r["ex"] if lv == "all" else r.get("ex_by_hardness", {}).get(lv, 0.0) for lv in levels]
        xs = [j + (i - (len(records) - 1) / 2) * width for j in range(len(levels))]
        bars = ax.bar(xs, values, width=width, label=f"{r['name']} ({r['stage']})")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylim(0, 110)
    ax.set_ylabel("execution accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare_cost(records: list[dict], path: Path) -> Path:
    """Three bar charts side by side: training wall time, seconds per step, peak memory (CUDA if any, else RSS)."""
    plt = _pyplot()
    names = [r["name"] for r in records]
    panels = [
        ("training wall time (s)", [r.get("train_seconds") for r in records]),
        ("seconds per step", [r.get("seconds_per_step") for r in records]),
        ("peak memory (MB)", [r.get("peak_memory_mb") for r in records]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.2 * len(names) * 3), 3.8))
    for ax, (label, values) in zip(axes, panels, strict=True):
        bars = ax.bar(names, [v or 0 for v in values], color="#4c72b0")
        ax.bar_label(bars, labels=["-" if v is None else f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="y", alpha=0.3)
    kinds = sorted({r.get("peak_memory_kind", "RSS") for r in records})
    axes[2].set_title(f"peak memory (MB, {'/'.join(kinds)})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare_curves(runs: list[tuple[str, str, list[dict]]], keys: list[str | None], path: Path) -> Path:
    """One panel per run with its main training curve (`keys[i]` vs step; loss or reward): scales differ."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(max(5, 4 * len(runs)), 3.6), squeeze=False)
    for ax, (name, stage, rows), key in zip(axes[0], runs, keys, strict=True):
        pts = [
            (r["step"], r[key])
            for r in rows
            if key and r.get("event") != "train_end" and isinstance(r.get(key), (int, float)) and "step" in r
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=2)
        else:
            ax.text(0.5, 0.5, "no curve logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel(key or "-")
        ax.set_title(f"{name} ({stage})")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
