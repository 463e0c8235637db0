"""PNG plots written next to the outputs, so a user can look at a run without a dashboard."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Every chart leaves through here: a PNG, and the figure closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------
# Fonts: database names, run names and titles may be Chinese (CSpider, DuSQL) or Japanese/Korean. Matplotlib's
# bundled DejaVu Sans has no CJK glyphs; with a CJK font installed it is added after the default family, and
# matplotlib (>= 3.6) falls back to it glyph by glyph, so Latin text keeps its usual look.

# Han, kana, hangul, bopomofo, CJK punctuation and symbols, fullwidth forms, and the supplementary ideographs.
_CJK_RE = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff"
    "\u3200-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
    "\U00020000-\U0003134f]"
)

# Known CJK families, best first (sans before serif: the rest of a chart is sans).
_CJK_FAMILY_HINTS = (
    "Noto Sans CJK",
    "Source Han Sans",
    "Noto Sans SC",
    "Noto Sans TC",
    "Noto Sans JP",
    "Noto Sans KR",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "PingFang",
    "Hiragino Sans",
    "SimHei",
    "Heiti",
    "Arial Unicode",
    "AR PL",
    "Noto Serif CJK",
    "Source Han Serif",
    "WenQuanYi",
)
# Regional variants of one family: Chinese first (the CJK text in NL2SQL data is mostly Chinese).
_CJK_REGION_ORDER = ("SC", "CN", "TC", "HK", "TW", "JP", "KR")
# Paths worth registering when matplotlib's font cache predates the installation of a CJK font.
_CJK_PATH_HINTS = ("cjk", "wqy", "wenquanyi", "droid", "sourcehan", "source-han", "arphic", "uming", "ukai")

_warned_no_cjk_font = False


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def _covers(path: str, text: str) -> bool:
    """Whether the font file has a glyph for every character of `text` (face 0 of a collection)."""
    from matplotlib import ft2font

    try:
        font = ft2font.FT2Font(path)
    except (OSError, RuntimeError, ValueError):
        return False
    return all(font.get_char_index(ord(ch)) != 0 for ch in text)


def _rank(name: str) -> tuple[int, int] | None:
    low = name.lower()
    hint = next((i for i, h in enumerate(_CJK_FAMILY_HINTS) if h.lower() in low), None)
    if hint is None:
        return None
    words = name.upper().split()
    region = next((i for i, r in enumerate(_CJK_REGION_ORDER) if r in words), len(_CJK_REGION_ORDER))
    return hint, region


def _find_cjk_families() -> list[str]:
    from matplotlib import font_manager

    ranked: dict[str, tuple[int, int]] = {}
    for entry in font_manager.fontManager.ttflist:
        rank = _rank(entry.name)
        if rank is not None and entry.name not in ranked and _covers(entry.fname, "中文歌"):
            ranked[entry.name] = rank
    return sorted(ranked, key=lambda name: ranked[name])


@functools.cache
def cjk_font_families() -> tuple[str, ...]:
    """Installed font families with CJK glyphs, best first (empty when there are none). Fonts installed after
    matplotlib built its font cache (e.g. `apt-get install fonts-noto-cjk` later) are registered here too."""
    from matplotlib import font_manager

    families = _find_cjk_families()
    if not families:
        known = {os.path.realpath(e.fname) for e in font_manager.fontManager.ttflist}
        try:
            system = font_manager.findSystemFonts()
        except Exception:  # fc-list missing or failing: only the cached fonts count
            system = []
        for path in system:
            if os.path.realpath(path) not in known and any(h in path.lower() for h in _CJK_PATH_HINTS):
                with contextlib.suppress(Exception):
                    font_manager.fontManager.addfont(path)
        families = _find_cjk_families()
    return tuple(families[:3])


def _strings(items: Iterable) -> Iterator[str]:
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, Iterable):
            yield from _strings(item)
        elif item is not None:
            yield str(item)


@contextlib.contextmanager
def _figure(*texts):
    """pyplot, for one chart whose labels, names and titles are among `texts`, with fonts that can draw them:
    with CJK text, the best installed CJK family as a per-glyph fallback; with none installed, one warning (per
    process) that says what to install, and none of matplotlib's per-glyph "missing from font" warnings."""
    global _warned_no_cjk_font
    plt = _pyplot()
    import matplotlib

    with warnings.catch_warnings():
        # The chart still renders (placeholder boxes where a glyph is missing); say so once, below, not per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        if not any(has_cjk(t) for t in _strings(texts)):
            yield plt
            return
        families = cjk_font_families()
        if not families:
            if not _warned_no_cjk_font:
                _warned_no_cjk_font = True
                log.warning(
                    "no font with CJK glyphs is installed: CJK labels in the plots render as boxes "
                    "(install one, e.g. `apt-get install fonts-noto-cjk`)"
                )
            yield plt
            return
        base = list(matplotlib.rcParams["font.family"])
        with matplotlib.rc_context({"font.family": base + [f for f in families if f not in base]}):
            yield plt


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# Preference stages: DPO-family implicit-reward margins and accuracies, the reward model's pairwise ones.
_PREFERENCE_KEYS = ("rewards/margins", "rewards/accuracies", "accuracy", "margin", "eval_accuracy", "eval_margin")

# The parts of nl2sql_align.ppo's loss. `policy_loss` and `entropy` alone say nothing: TRL's SFT/DPO/GRPO log
# `entropy` too, and GRPO `policy_loss`; `_PPO_MARKERS` are only ever logged by the PPO trainer (value head, KL
# controller).
_PPO_KEYS = ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy", "approx_kl")
_PPO_MARKERS = ("value_loss", "value_clip_fraction", "kl_coef")


def run_stage(rows: list[dict]) -> str | None:
    """The stage (with dpo's method: "dpo/kto") from the last `train_end` row of a metrics.jsonl; "ppo" when
    there is none but the rows carry the PPO trainer's own keys; else None."""
    end = next((r for r in reversed(rows) if r.get("event") == "train_end" and r.get("stage")), None)
    if end is not None:
        stage, method = str(end["stage"]), end.get("method")
        return f"{stage}/{method}" if method and method != stage else stage
    return "ppo" if any(k in r for r in rows for k in _PPO_MARKERS) else None


def training_groups(rows: list[dict], stage: str | None) -> dict[str, tuple[str, list[str]]]:
    """{PNG name: (its title's first line, the keys it plots)}, for the groups with at least one logged value."""

    def logged(keys: Iterable[str]) -> list[str]:
        return [k for k in keys if any(isinstance(r.get(k), (int, float)) and "step" in r for r in rows)]

    is_ppo = (stage or "").split("/")[0] == "ppo"
    means = sorted({k for r in rows for k in r if k.startswith(("reward", "rewards/")) and k.endswith("mean")})
    groups: dict[str, tuple[str, list[str]]] = {
        "loss": ("", logged(("loss", "eval_loss"))),
        "rewards": ("mean rewards", logged(means)),
        "preference": ("preference", logged(_PREFERENCE_KEYS)),
    }
    for key in means:
        if key.startswith("rewards/"):
            groups["reward_" + key.split("/")[1]] = ("", logged([key]))
    if is_ppo:
        # ppo: KL to the reference (and its coefficient), and the parts of the loss.
        groups["kl"] = ("PPO KL to the reference", logged(("kl", "kl_coef")))
        groups["ppo"] = ("PPO loss parts", logged(_PPO_KEYS))
    else:
        # TRL's per-token entropy of the policy (sft, dpo, grpo); ppo's is among its loss parts.
        groups["entropy"] = ("", logged(("entropy",)))
    return {name: (_describe(what, keys), keys) for name, (what, keys) in groups.items() if keys}


def _describe(what: str, keys: list[str]) -> str:
    """A title's first line: what the chart shows and the keys it plots ("PPO KL to the reference: kl, kl_coef"),
    the keys alone for an unnamed group ("loss and eval_loss"), the name alone when they would not fit."""
    listed = ", ".join(keys)
    if not what:
        return " and ".join(keys) if len(keys) <= 2 else listed
    return what if len(listed) > 45 else f"{what}: {listed}"


def plot_training(
    metrics_path: Path, out_dir: Path, run_name: str | None = None, stage: str | None = None
) -> list[Path]:
    """One PNG per logged curve family: loss (train and eval), every `rewards/*` / `reward*` mean together,
    one per reward component (`reward_<name>.png`: components have different scales), the preference
    margins/accuracies of rm and dpo (`preference.png`), the policy's token entropy (`entropy.png`, not ppo),
    and for ppo runs only its KL (`kl.png`) and loss parts (`ppo.png`). `stage` defaults to the one the
    `train_end` row names (`run_stage`); each title names what it plots, the stage and the run."""
    rows = read_metrics(metrics_path)
    if not rows:
        return []
    stage = stage or run_stage(rows)
    run = run_name or metrics_path.parent.name
    written = []
    for name, (what, keys) in training_groups(rows, stage).items():
        title = f"{what}\n{stage} run {run}" if stage else f"{what}\nrun {run}"
        with _figure(title, keys) as plt:
            fig, ax = plt.subplots(figsize=(7, 4))
            for key in keys:
                pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=2, label=key)
            ax.set_xlabel("step")
            ax.set_ylabel(keys[0] if len(keys) == 1 else "value" if name == "ppo" else name)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            written.append(_save(fig, out_dir / f"{name}.png"))
    return written


def plot_ex_comparison(labels: list[str], values: list[float], path: Path, title: str) -> Path:
    with _figure(title, labels) as plt:
        fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(labels)), 4))
        bars = ax.bar(labels, values, color="#4c72b0")
        ax.bar_label(bars, fmt="%.1f")
        ax.set_ylim(0, 100)
        ax.set_ylabel("execution accuracy (%)")
        ax.set_title(title)
        fig.tight_layout()
        return _save(fig, path)


def plot_ex_by_level(summary: dict, path: Path, title: str | None = None) -> Path:
    """EX per hardness level from an eval summary (`evaluate.summarize`): "all", each level, and "complex"
    (hard + extra) when present, each bar labelled with its EX and its number of examples."""
    groups = [("all", summary)] + list(summary.get("ex_by_hardness", {}).items())
    if "ex_complex" in summary:
        groups.append(("complex\n(hard+extra)", summary["ex_complex"]))
    colors = (
        ["#55a868"] + ["#4c72b0"] * len(summary.get("ex_by_hardness", {})) + ["#dd8452"] * ("ex_complex" in summary)
    )
    title = title or f"EX ({summary['metric']}) per hardness level, n={summary['n']}"
    with _figure(title, [name for name, _ in groups]) as plt:
        fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(groups)), 4))
        bars = ax.bar([name for name, _ in groups], [g["ex"] for _, g in groups], color=colors)
        ax.bar_label(bars, labels=[f"{g['ex']:.1f}\nn={g['n']}" for _, g in groups], fontsize=8)
        ax.set_ylim(0, 110)  # room for the two-line labels above a bar at 100
        ax.set_ylabel("execution accuracy (%)")
        ax.set_title(title)
        fig.tight_layout()
        return _save(fig, path)


def plot_pass_at_k(summary: dict, path: Path, title: str | None = None) -> Path:
    """pass@k against k (log2 axis) from an eval summary with samples (`evaluate.summarize`), with greedy EX and
    maj@N (the voted EX) as horizontal reference lines: the gap between the greedy line and the curve is the
    headroom that sampling shows."""
    curve = summary["pass_at_k"]
    ks = [int(k) for k in curve]
    n = summary.get("samples") or ks[-1]
    title = title or f"pass@k ({summary['metric']}), {n} samples, n={summary['n']} questions"
    with _figure(title) as plt:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(ks, [curve[str(k)] for k in ks], marker="o", color="#4c72b0", label="pass@k")
        for k in ks:
            ax.annotate(
                f"{curve[str(k)]:.1f}", (k, curve[str(k)]), textcoords="offset points", xytext=(0, 6), ha="center"
            )
        ax.axhline(summary["ex"], color="#55a868", linestyle="--", label=f"greedy EX {summary['ex']:.1f}")
        if "ex_voted" in summary:
            ax.axhline(summary["ex_voted"], color="#dd8452", linestyle=":", label=f"maj@{n} {summary['ex_voted']:.1f}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_ylim(0, 112)  # room for the label above a point at 100
        ax.set_xlabel("k (samples)")
        ax.set_ylabel("execution accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------
# `compare --runs`: several runs side by side (records as written by nl2sql_align.compare.run_record)


def plot_compare_ex(records: list[dict], path: Path, title: str) -> Path:
    """Grouped bars: for each run, EX overall (with its 95% bootstrap interval when the record has one) and per
    hardness level."""
    levels = ["all", *dict.fromkeys(k for r in records for k in r.get("ex_by_hardness", {}))]
    names = [f"{r['name']} ({r['stage']})" for r in records]
    width = 0.8 / max(1, len(records))
    with _figure(title, levels, names) as plt:
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(levels) * max(1, len(records)) ** 0.5 + 2), 4))
        for i, (r, name) in enumerate(zip(records, names, strict=True)):
            values = [r["ex"] if lv == "all" else r.get("ex_by_hardness", {}).get(lv, 0.0) for lv in levels]
            xs = [j + (i - (len(records) - 1) / 2) * width for j in range(len(levels))]
            bars = ax.bar(xs, values, width=width, label=name)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
            if r.get("ex_ci"):  # the overall EX's 95% bootstrap interval (compare.add_paired_stats)
                lo, hi = r["ex_ci"]
                yerr = [[max(0.0, r["ex"] - lo)], [max(0.0, hi - r["ex"])]]
                ax.errorbar([xs[0]], [r["ex"]], yerr=yerr, fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.set_xticks(range(len(levels)), levels)
        ax.set_ylim(0, 110)
        ax.set_ylabel("execution accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)


# Units for the cost chart: (name, size in the unit the records use). Memory is logged in MiB (2**20 bytes:
# ru_maxrss / 1024, torch.cuda.max_memory_allocated / 2**20), time in seconds.
MEMORY_UNITS = (("MiB", 1), ("GiB", 1024), ("TiB", 1024**2))
TIME_UNITS = (("s", 1), ("min", 60), ("h", 3600))


def pick_unit(values: Iterable[float | None], units: tuple[tuple[str, float], ...]) -> tuple[str, float]:
    """The largest unit that the largest of `values` is at least one of (the first unit when none is)."""
    top = max((abs(v) for v in values if v is not None), default=0)
    return next(((n, size) for n, size in reversed(units) if top >= size), units[0])


def format_number(x: float) -> str:
    """Three significant digits, never an exponent, thousands separated: 0.412, 5.25, 850, 1,234."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    text = f"{x:,.{decimals}f}"
    if abs(float(text.replace(",", ""))) >= 10 ** (3 - decimals) and decimals:  # 9.996 -> "10.00": one too many
        text = f"{x:,.{decimals - 1}f}"
    return text


def format_quantity(value: float | None, units: tuple[tuple[str, float], ...]) -> str:
    """A bar label: the value in its own best unit, "1.04 GiB", "850 MiB", "20.6 min", "0.412 s"; "-" for None."""
    if value is None:
        return "-"
    name, size = pick_unit([value], units)
    return f"{format_number(value / size)} {name}"


def cost_panels(records: list[dict]) -> list[tuple[str, list[float | None], tuple[str, float], list[str]]]:
    """(title, values, (axis unit, its size), bar labels) for the panels of `plot_compare_cost`."""
    kinds = sorted({r.get("peak_memory_kind") or "RSS" for r in records})
    panels = []
    for what, key, units in (
        ("training wall time", "train_seconds", TIME_UNITS),
        ("time per step", "seconds_per_step", TIME_UNITS),
        (f"peak memory ({'/'.join(kinds)})", "peak_memory_mb", MEMORY_UNITS),
    ):
        values = [r.get(key) for r in records]
        unit = pick_unit(values, units)
        panels.append((f"{what}, {unit[0]}", values, unit, [format_quantity(v, units) for v in values]))
    return panels


def plot_compare_cost(records: list[dict], path: Path) -> Path:
    """Three bar charts side by side: training wall time, seconds per step, peak memory (CUDA if any, else RSS),
    each axis in a unit that fits its values and each bar labelled in its own ("1.04 GiB", "20.6 min")."""
    names = [r["name"] for r in records]
    with _figure(names) as plt:
        from matplotlib.ticker import FuncFormatter

        fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.2 * len(names) * 3), 3.8))
        for ax, (title, values, (_, size), labels) in zip(axes, cost_panels(records), strict=True):
            bars = ax.bar(names, [(v or 0) / size for v in values], color="#4c72b0")
            ax.bar_label(bars, labels=labels, fontsize=8)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
            ax.set_title(title)
            ax.tick_params(axis="x", labelrotation=30)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)


def plot_compare_curves(runs: list[tuple[str, str, list[dict]]], keys: list[str | None], path: Path) -> Path:
    """One panel per run with its main training curve (`keys[i]` vs step; loss or reward): scales differ."""
    with _figure([(name, stage) for name, stage, _ in runs]) as plt:
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
        return _save(fig, path)
