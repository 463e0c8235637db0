"""What the PNG charts actually show: which training plots a stage gets and what their titles say, readable cost
labels, and CJK labels drawn with a font that has their glyphs (or one clear warning when no such font exists)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from nl2sql_align import plots

CJK_LABELS = ["歌手", "演唱会"]


@pytest.fixture
def saved(monkeypatch):
    """The figures the plot functions save, in order (still inspectable after they are closed)."""
    figs = []
    save = plots._save

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def _texts(fig) -> list[str]:
    """Every string drawn on the figure: titles, axis and tick labels, bar labels, legend entries."""
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontproperties"))]


# ---------------------------------------------------------------------------------------------------------
# plot_training: ppo.png and kl.png only for ppo


def _end(stage: str, **extra) -> dict:
    return {"step": 2, "event": "train_end", "stage": stage, "train_seconds": 1.0, "steps": 2, **extra}


STAGE_ROWS = {
    # TRL's SFTTrainer: loss, entropy, mean_token_accuracy, num_tokens.
    "sft": [
        {"step": s, "loss": 2.0 / s, "entropy": 1.5, "mean_token_accuracy": 0.3 * s, "num_tokens": 100.0 * s}
        for s in (1, 2)
    ]
    + [_end("sft")],
    "dpo": [
        {
            "step": s,
            "loss": 0.69,
            "entropy": 1.2,
            "rewards/chosen": 0.1,
            "rewards/rejected": -0.1,
            "rewards/margins": 0.2 * s,
            "rewards/accuracies": 0.5,
            "mean_token_accuracy": 0.4,
        }
        for s in (1, 2)
    ]
    + [_end("dpo", method="kto")],
    # TRL's GRPOTrainer logs kl (beta > 0), entropy and, with an entropy coefficient, policy_loss.
    "grpo": [
        {
            "step": s,
            "loss": 0.01,
            "reward": 0.5,
            "reward_std": 0.1,
            "rewards/execution/mean": 0.4,
            "rewards/format/mean": 0.9,
            "kl": 0.01 * s,
            "entropy": 1.1,
            "policy_loss": 0.02,
            "clip_ratio/region_mean": 0.0,
        }
        for s in (1, 2)
    ]
    + [_end("grpo")],
    # nl2sql_align.ppo.trainer.
    "ppo": [
        {
            "step": s,
            "loss": 0.3,
            "policy_loss": 0.1,
            "value_loss": 0.4,
            "clip_fraction": 0.0,
            "value_clip_fraction": 0.1,
            "approx_kl": 0.0,
            "entropy": 1.0,
            "kl": 0.02,
            "kl_coef": 0.05,
            "score": 0.3,
            "reward": 0.3,
            "rewards/length_reward/mean": 0.3,
        }
        for s in (1, 2)
    ]
    + [_end("ppo")],
}

EXPECTED = {
    "sft": {"loss.png", "entropy.png"},
    "dpo": {"loss.png", "preference.png", "entropy.png"},
    "grpo": {"loss.png", "rewards.png", "reward_execution.png", "reward_format.png", "entropy.png"},
    "ppo": {"loss.png", "rewards.png", "reward_length_reward.png", "kl.png", "ppo.png"},
}


def _metrics(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("stage", sorted(STAGE_ROWS))
def test_training_plots_match_the_stage(tmp_path, saved, stage):
    written = plots.plot_training(_metrics(tmp_path, STAGE_ROWS[stage]), tmp_path / "plots", run_name="my-run")
    assert {p.name for p in written} == EXPECTED[stage]
    assert all(p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    titles = {p.name: fig.axes[0].get_title() for p, fig in zip(written, saved, strict=True)}
    label = "dpo/kto" if stage == "dpo" else stage
    for name, title in titles.items():
        assert f"{label} run my-run" in title, (name, title)
        if stage != "ppo":
            assert "ppo" not in title.lower(), (name, title)
    # Each title names the keys it plots (or, for the many loss parts, what they are), and only those.
    for (name, title), fig in zip(titles.items(), saved, strict=True):
        plotted = [line.get_label() for line in fig.axes[0].get_lines()]
        if name == "ppo.png":
            assert title.startswith("PPO loss parts")
            assert set(plotted) == set(plots._PPO_KEYS)
        elif name != "rewards.png" or len(", ".join(plotted)) <= 45:
            assert all(k in title for k in plotted), (name, title, plotted)
    if stage == "ppo":
        assert titles["kl.png"].startswith("PPO KL to the reference: kl, kl_coef")
    else:
        assert titles["entropy.png"].startswith("entropy")


def test_ppo_is_recognised_without_a_train_end_row(tmp_path):
    """An interrupted run has no train_end row: PPO's own keys (value head, KL controller) still say it is ppo,
    and TRL's entropy / GRPO's policy_loss and kl alone do not."""
    ppo_rows = [r for r in STAGE_ROWS["ppo"] if "event" not in r]
    assert plots.run_stage(ppo_rows) == "ppo"
    grpo_rows = [r for r in STAGE_ROWS["grpo"] if "event" not in r]
    assert plots.run_stage(grpo_rows) is None
    written = plots.plot_training(_metrics(tmp_path, grpo_rows), tmp_path / "plots")
    assert not {"ppo.png", "kl.png"} & {p.name for p in written}
    written = plots.plot_training(_metrics(tmp_path / "p", ppo_rows), tmp_path / "p" / "plots")
    assert {"ppo.png", "kl.png"} <= {p.name for p in written}


# ---------------------------------------------------------------------------------------------------------
# cost chart labels


@pytest.mark.parametrize(
    ("value", "units", "text"),
    [
        (1060.0, plots.MEMORY_UNITS, "1.04 GiB"),
        (850.0, plots.MEMORY_UNITS, "850 MiB"),
        (5.25, plots.MEMORY_UNITS, "5.25 MiB"),
        (81920.0, plots.MEMORY_UNITS, "80.0 GiB"),
        (1234.0, plots.TIME_UNITS, "20.6 min"),
        (45.2, plots.TIME_UNITS, "45.2 s"),
        (0.4123, plots.TIME_UNITS, "0.412 s"),
        (7400.0, plots.TIME_UNITS, "2.06 h"),
        (123456.0, plots.TIME_UNITS, "34.3 h"),
        (9.996, plots.TIME_UNITS, "10.0 s"),
        (None, plots.TIME_UNITS, "-"),
    ],
)
def test_format_quantity(value, units, text):
    assert plots.format_quantity(value, units) == text


def test_format_number_has_no_exponent():
    assert plots.format_number(1234.4) == "1,234"
    assert plots.format_number(2_500_000.0) == "2,500,000"
    assert plots.format_number(0.000123) == "0.000123"
    assert plots.format_number(0) == "0"


def test_cost_chart_labels_are_readable(tmp_path, saved):
    records = [
        {"name": "sft", "train_seconds": 1234.0, "seconds_per_step": 0.41, "peak_memory_mb": 1060.0},
        {"name": "dpo", "train_seconds": 45.2, "seconds_per_step": None, "peak_memory_mb": 850.0},
    ]
    for r in records:
        r["peak_memory_kind"] = "CUDA"
    path = plots.plot_compare_cost(records, tmp_path / "cost.png")
    assert path.is_file()
    (fig,) = saved
    texts = _texts(fig)
    assert not [t for t in texts if "e+" in t or "e-" in t], texts
    bar_labels = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert bar_labels == [["20.6 min", "45.2 s"], ["0.410 s", "-"], ["1.04 GiB", "850 MiB"]]
    assert [ax.get_title() for ax in fig.axes] == [
        "training wall time, min",
        "time per step, s",
        "peak memory (CUDA), GiB",
    ]
    # The memory axis is in GiB: the 1060 MiB bar is 1.035 high, its ticks plain decimals.
    heights = [bar.get_height() for bar in fig.axes[2].patches]
    assert heights == pytest.approx([1060 / 1024, 850 / 1024])
    ticks = [t.get_text() for t in fig.axes[2].get_yticklabels()]
    assert ticks and all(t.replace(".", "").replace(",", "").isdigit() for t in ticks), ticks


# ---------------------------------------------------------------------------------------------------------
# CJK labels


def _font_files(prop) -> list[str]:
    """The files matplotlib's per-glyph fallback draws a text with: one per family of its font.family list."""
    from matplotlib import font_manager

    files = []
    for family in prop.get_family():
        p = prop.copy()
        p.set_family(family)
        try:
            files.append(font_manager.findfont(p, fallback_to_default=False))
        except ValueError:
            pass
    return files


def _covered(files: list[str], ch: str) -> bool:
    from matplotlib import ft2font

    return any(ft2font.FT2Font(f).get_char_index(ord(ch)) != 0 for f in files)


def _render(text: str):
    with plots._figure(text) as plt:
        fig = plt.figure(figsize=(3, 1), dpi=100)
        fig.text(0.1, 0.3, text, fontsize=24)
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
        plt.close(fig)
    return pixels


def test_cjk_labels_use_a_font_with_their_glyphs(tmp_path, saved, monkeypatch):
    import matplotlib

    families = plots.cjk_font_families()
    if not families:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    before = list(matplotlib.rcParams["font.family"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_ex_comparison(CJK_LABELS, [50.0, 75.0], tmp_path / "ex_by_db.png", "EX per database 数据库")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert matplotlib.rcParams["font.family"] == before  # the fallback list does not leak into other plots
    (fig,) = saved
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == CJK_LABELS
    for t in [*labels, ax.title]:
        files = _font_files(t.get_fontproperties())
        assert all(_covered(files, ch) for ch in t.get_text() if plots.has_cjk(ch)), (t.get_text(), files)
        assert _covered(files, "E")  # Latin still drawn (by DejaVu Sans, the first family)
    # Rendered, not only resolved: the pixels differ from the placeholder boxes drawn without the CJK font.
    with_font = _render("歌手演唱会")
    monkeypatch.setattr(plots, "cjk_font_families", lambda: ())
    monkeypatch.setattr(plots, "_warned_no_cjk_font", True)
    boxes = _render("歌手演唱会")
    assert with_font.shape == boxes.shape
    assert (with_font != boxes).any(axis=-1).sum() > 100


def test_without_a_cjk_font_one_warning_and_no_glyph_spam(tmp_path, caplog, capfd, monkeypatch):
    monkeypatch.setattr(plots, "cjk_font_families", lambda: ())
    monkeypatch.setattr(plots, "_warned_no_cjk_font", False)
    caplog.set_level(logging.WARNING, logger="nl2sql_align.plots")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_ex_comparison(["concert_singer", "pets_1"], [50.0, 75.0], tmp_path / "ascii.png", "EX")
        assert not caplog.records  # nothing to warn about without CJK text
        for i in range(2):
            plots.plot_ex_comparison(CJK_LABELS, [50.0, 75.0], tmp_path / f"cjk{i}.png", "EX per database")
        plots.plot_compare_curves([("运行", "sft", [])], [None], tmp_path / "curves.png")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert "missing from font" not in capfd.readouterr().err
    messages = [r.getMessage() for r in caplog.records if r.name == "nl2sql_align.plots"]
    assert len(messages) == 1 and "fonts-noto-cjk" in messages[0], messages
    assert all((tmp_path / n).is_file() for n in ("ascii.png", "cjk0.png", "cjk1.png", "curves.png"))


def test_has_cjk():
    assert plots.has_cjk("歌手") and plots.has_cjk("コンサート") and plots.has_cjk("가수")
    assert not plots.has_cjk("concert_singer") and not plots.has_cjk("café – naïve")
