"""PNG plots of a sweep's report (matplotlib, Agg): ours beside the paper's, one figure per table.

Every figure is FIG_SIZE at FIG_DPI (640 x 400 px). Ours and the paper's are on their own y axes
(left: ours, right: the paper's): at the scale that was run the absolute AP differs by far, the
shape is what compares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

FIG_SIZE = (6.4, 4.0)
FIG_DPI = 100

FILES = {"1a": "ap_vs_alpha_ce.png", "1b": "ap_vs_gamma_fl.png", "1c": "anchors.png", "1d": "ohem_vs_fl.png",
         "1e": "speed_accuracy.png"}
WHAT = {"1a": "AP vs alpha (CE, gamma 0)", "1b": "AP vs gamma (FL, best alpha)", "1c": "AP per anchor setting",
        "1d": "AP of OHEM rows vs FL", "1e": "AP vs inference ms per depth (Figure 2 style)"}


def _primary(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["primary"] & (df["table"] != "")]


def _twin_lines(ax, x, ours, paper, xlabel: str, log: bool = False) -> None:
    ax.plot(x, ours, "o-", color="C0", label="ours")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AP (ours)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(x, paper, "s--", color="C1", label="paper")
    ax2.set_ylabel("AP (paper)", color="C1")
    if log:
        ax.set_xscale("symlog", linthresh=0.1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="lower center")


def _bars(ax, names, ours, paper) -> None:
    idx = range(len(names))
    ax.bar([i - 0.2 for i in idx], ours, 0.4, color="C0", label="ours")
    ax.set_ylabel("AP (ours)", color="C0")
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in idx], paper, 0.4, color="C1", label="paper")
    ax2.set_ylabel("AP (paper)", color="C1")
    ax.set_xticks(list(idx))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    handles = [ax.patches[0], ax2.patches[0]] if ax.patches and ax2.patches else []
    if handles:
        ax.legend(handles, ["ours", "paper"], loc="upper left", fontsize=8)


def plot_table(table: str, df: pd.DataFrame, path: Path) -> bool:
    """Write the figure of ``table``; False (nothing written) when no row has a result."""
    d = _primary(df)
    if d["AP"].notna().sum() == 0:
        return False
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    if table == "1a":
        d = d.assign(x=d["alpha"].astype(float)).sort_values("x")
        _twin_lines(ax, d["x"], d["AP"], d["AP_paper"], "alpha")
    elif table == "1b":
        d = d.assign(x=d["gamma"].astype(float)).sort_values("x")
        _twin_lines(ax, d["x"], d["AP"], d["AP_paper"], "gamma (alpha as in the paper's row)")
    elif table == "1c":
        _bars(ax, [f"{a} sc x {b} ar" for a, b in zip(d["num_scales"], d["num_aspect_ratios"])], d["AP"], d["AP_paper"])
    elif table == "1d":
        _bars(ax, [m if m == "FL" else f"{m} {b}/{n}" for m, b, n in zip(d["method"], d["batch_size"], d["nms_thr"])],
              d["AP"], d["AP_paper"])
    elif table == "1e":
        plt.close(fig)
        fig, (ax, axp) = plt.subplots(1, 2, figsize=FIG_SIZE, dpi=FIG_DPI)
        for i, (depth, g) in enumerate(d.groupby("depth")):
            g = g.sort_values("time_ms")
            ax.plot(g["time_ms"], g["AP"], "o-", color=f"C{i}", label=f"R{depth}")
            gp = g.sort_values("time_ms_paper")
            axp.plot(gp["time_ms_paper"], gp["AP_paper"], "s--", color=f"C{i}", label=f"R{depth}")
        ax.set_xlabel("inference ms / image (ours)")
        ax.set_ylabel("AP")
        axp.set_xlabel("ms / image (paper, M40)")
        axp.set_title("paper", fontsize=9)
        ax.legend(fontsize=8)
        axp.legend(fontsize=8)
    elif "AP_ref" in d:  # a user's table: one bar per row, beside its reference where it has one
        if d["AP_ref"].notna().any():
            _bars(ax, list(d["label"]), d["AP"], d["AP_ref"])
            for other in fig.axes[1:]:
                other.set_ylabel("AP (reference)", color="C1")
        else:
            ax.bar(range(len(d)), d["AP"], 0.6, color="C0")
            ax.set_xticks(list(range(len(d))))
            ax.set_xticklabels(list(d["label"]), rotation=30, ha="right", fontsize=7)
            ax.set_ylabel("AP (ours)")
    else:
        plt.close(fig)
        return False
    ax.set_title(WHAT.get(table, f"AP per row of {table}") if table != "1e" else "ours",
                 fontsize=9 if table == "1e" else None)
    fig.subplots_adjust(bottom=0.25 if table not in ("1a", "1b", "1e") else 0.13, left=0.11, right=0.88,
                        wspace=0.3 if table == "1e" else None)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return True


def plot_curves(table: str, df: pd.DataFrame, path: Path) -> bool:
    """AP against iterations, one line per row (the mean over its seeds); rows that had not converged
    dashed. False (nothing written) when no row has a curve."""
    d = df[df["primary"] & df["curve"].map(lambda c: len(c) >= 2)]
    if not len(d):
        return False
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
    for i, (_, row) in enumerate(d.iterrows()):
        steps, aps = zip(*row["curve"])
        late = row["converged"] is False
        ax.plot(steps, aps, "--" if late else "-", marker="o", markersize=3, color=f"C{i % 10}",
                label=f"{row['label']}" + (" (not converged)" if late else "") + (f" [{row['seeds']} seeds]"
                                                                                  if row["seeds"] > 1 else ""))
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP (validation)")
    ax.set_title(f"Table {table}: AP against iterations (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", ncol=2 if len(d) > 6 else 1)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return True


def curves_file(table: str) -> str:
    return f"ap_curves_{table.replace('.', '_')}.png"


def write_plots(tables: Dict[str, pd.DataFrame], directory: Path) -> Dict[str, str]:
    """file name -> what it shows (or "skipped: why") for each table of the report."""
    out: Dict[str, str] = {}
    for table, df in tables.items():
        name = FILES.get(table) or (f"ap_{table.replace('.', '_')}.png" if "AP_ref" in df else None)
        if name:
            what = WHAT.get(table, f"AP per row of {table}")
            out[name] = what if plot_table(table, df, directory / name) else "skipped: no row has a result yet"
        if "curve" in df and plot_curves(table, df, directory / curves_file(table)):
            out[curves_file(table)] = f"AP against iterations for the rows of {table} (dashed: not converged)"
    return out


LOSS_DISTRIBUTION = "loss_distribution.png"


def plot_loss_distribution(dist: Dict[str, object], path: Path, source: str) -> None:
    """Figure 4: cumulative normalized loss of positive and of negative samples, one line per gamma."""
    fig, axes = plt.subplots(1, 2, figsize=FIG_SIZE, dpi=FIG_DPI, sharey=True)
    x = dist["fraction"].numpy()
    for ax, group in zip(axes, ("positives", "negatives")):
        for gamma, curve in dist[group].items():
            ax.plot(x, curve.numpy(), label=f"gamma = {gamma:g}")
        ax.set_title(f"{group} ({dist[f'num_{group}']:,} samples)", fontsize=9)
        ax.set_xlabel("fraction of samples (easiest first)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cumulative normalized loss")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Loss distribution (Figure 4) of {source}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
