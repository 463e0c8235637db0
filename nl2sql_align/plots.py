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
    colors = ["#55a868"] + ["#4c72b0"] * len(summary.get("ex_by_hardness", {})) + ["#dd8452"] * ("ex_complex" in summary)
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
