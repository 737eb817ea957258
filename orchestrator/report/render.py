"""Writing a sweep's report: table.md, table.csv, table.tex (booktabs), summary.json, the plots and
Figure 4; and the index of every sweep reported in a folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..sweep import TABLES
from .build import SweepReport
from .paper import PAPER
from .rows import fmt

FIGURE4_IMAGES = 50  # validation images whose anchors Figure 4 analyses

TABLE_NOTES = {
    "1d": "OHEM as run here (the paper is silent on these): the batch counts anchors per image after NMS over all "
          "its anchors, an anchor's loss is its CE summed over classes, the box loss covers every positive and both "
          "losses are divided by the positive count (as for FL); 1:3 is SSD's variant: at most batch x .25 "
          "positives and three negatives per positive (fewer positives, a smaller minibatch).",
    "1e": "Time: inference ms per image at batch 1 (forward + post-processing, as the paper's M40 timing) where "
          "eval.timing_images > 0, else per image at eval.batch_size. On the cpu profile the sweep runs one trial at "
          "a time on two threads (max_concurrent 1), so each timing ran with nothing else training beside it.",
}

VERDICT_RULES = ("Verdicts test the claims the sweep file declares (orchestrator/report/claims.py): \"A beats B\" by a "
                 "**paired t** test on the per-seed differences where both rows ran the same seeds (seed k is one draw "
                 "of data, initialization and pre-trained backbone for every row), else Welch's t, at the real degrees "
                 "of freedom; rank agreement by Spearman's rho with a two-sided permutation p; thresholds by a "
                 "one-sample t; divergence by Fisher's exact test. Holm's correction over the sweep's claims "
                 "(family-wise 5%): a claim **holds** where its Holm p <= 0.05 in the claimed direction, **does not "
                 "hold** only where the opposite effect is significant, and is **inconclusive** otherwise; **no "
                 "test** where a row has one seed. \"holds (not converged)\": a row it rests on gained more than 1 AP "
                 "over the last quarter of its schedule. Each line gives the difference, its 95% CI, df, p and the "
                 "Holm p.")


def verdict_line(v) -> str:
    return f"- {v.claim}: **{v.mark}** ({v.detail})"


def _layout(df: pd.DataFrame, table: str):
    """(key columns, metric columns, reference suffix, reference name) of a paper table or a user's."""
    if table in PAPER:
        return PAPER[table][1], PAPER[table][2], "_paper", "paper"
    metrics = [c[:-4] for c in df.columns if c.endswith("_ref")]
    return [], metrics, "_ref", "reference"


def _display(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """The table as shown (markdown / LaTeX): keys, row, status, ours +- std, reference, diff, run."""
    keys, metrics, suffix, ref_name = _layout(df, table)
    out = pd.DataFrame({k: df[k] for k in keys})
    out["our row"] = df["label"]
    out["status"] = df["status"]
    for m in metrics:
        ours = df[m].map(fmt)
        std = df[f"{m}_std"].map(lambda s: "" if math.isnan(s) else f" ± {s:.1f}")
        out[m] = ours + std.where(ours != "", "")
        if df[f"{m}{suffix}"].notna().any():
            out[f"{m} {ref_name}"] = df[f"{m}{suffix}"].map(fmt)
            out[f"Δ{m}"] = df[f"{m}_diff"].map(lambda x: "" if math.isnan(x) else f"{x:+.1f}")
    if table == "5.1":
        out["paper"] = df["paper_outcome"]
    out["seeds"] = df["seeds"]
    out["converged"] = [("" if c is None or (isinstance(c, float) and math.isnan(c)) else
                         f"{'yes' if c else 'no'} ({g:+.1f})") for c, g in zip(df["converged"], df["gain_last_quarter"])]
    out["run"] = df["run_ids"].map(lambda s: " ".join(r[:8] for r in s.split()))
    return out


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _latex(df: pd.DataFrame, caption: str) -> str:
    tex = lambda v: str(v).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("±", r"$\pm$") \
        .replace("Δ", r"$\Delta$")  # noqa: E731
    cols = list(df.columns)
    body = [" & ".join(tex(c) for c in cols) + r" \\", r"\midrule"]
    body += [" & ".join(tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}",
                      r"\toprule", *body, r"\bottomrule", r"\end{tabular}", r"\caption{" + tex(caption) + "}",
                      r"\end{table}", ""])


def write_report(report: SweepReport, directory: Path) -> None:
    from . import plots

    directory.mkdir(parents=True, exist_ok=True)
    report.plots = plots.write_plots(report.tables, directory)
    if "1b" in report.tables:
        report.plots[plots.LOSS_DISTRIBUTION] = _write_figure4(report, directory / plots.LOSS_DISTRIBUTION)
    s = report.settings
    md = [f"# {report.name}: our numbers beside the paper's", "",
          f"Profile **{s['profile']}**: {s['data']}, {s['model']}, backbone {s['backbone']}, {s['iterations']} "
          f"iterations of batch {s['batch_size']}, {s['hardware']}; {s['train_hours']} h of training "
          f"({s['gpu_hours']} GPU-hours). Code: {s['code_version']}"
          + (f" ({'; '.join(s['code_flags'])})" if s.get("code_flags") else "") + ". "
          "The paper: ResNet-50/101-FPN fine-tuned from ImageNet, 600 px COCO, 90k iterations of 16 images on 8 "
          "GPUs. Compare orderings and claims, not absolute AP.", "",
          f"Runs: variant **{s.get('variant', 'default')}** of the sweep file, seeds {s.get('seeds', '?')}, code "
          f"{s['code_version']}: the claims and the profile were committed before these seeds ran.", "",
          VERDICT_RULES, ""]
    tex = []
    for t, df in report.tables.items():
        spec = report.declaration.tables.get(t) if report.declaration else None
        caption = spec.caption if spec else TABLES.get(t, t)
        shown = _display(df, t)
        md += [f"## {caption}", "", _markdown(shown), "", "Verdicts:", ""]
        md += [verdict_line(v) for v in report.verdicts[t]] or ["- (no claim declared for this table)"]
        if t in TABLE_NOTES:
            md += ["", TABLE_NOTES[t]]
        tolerance = df["convergence_tolerance"].iloc[0] if len(df) else float("nan")
        if df["converged"].notna().any():
            md += ["", f"Converged: the AP gained over the last quarter of the schedule is at most {tolerance:.2f} "
                       "AP (the same per-row rule in every table); the column shows the gain."]
        md.append("")
        tex.append(_latex(shown, f"{caption} (ours beside the paper's; profile {s['profile']})"))
    md += ["## Plots", ""] + [f"- [{f}]({f}): {what}" if what.endswith(".png") or not what.startswith("skipped")
                              else f"- {f}: {what}" for f, what in report.plots.items()] + [""]
    (directory / "table.md").write_text("\n".join(md))
    pd.concat(report.tables.values(), ignore_index=True).to_csv(directory / "table.csv", index=False)
    (directory / "table.tex").write_text("% requires \\usepackage{booktabs}\n" + "\n".join(tex))
    summary = {"sweep": report.name, "settings": s, "plots": report.plots,
               "verdicts": {t: [v.as_dict() for v in vs] for t, vs in report.verdicts.items()}}
    (directory / "summary.json").write_text(json.dumps(summary, indent=1))


def _write_figure4(report: SweepReport, path: Path) -> str:
    """Figure 4 from the FL gamma 2 trial's final checkpoint; returns what the plot shows or why it was skipped."""
    if report.figure4_source is None:
        return "skipped: no finished FL gamma 2 trial with a checkpoint"
    label, directory = report.figure4_source
    checkpoint = Path(directory) / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"skipped: the checkpoint of {label} ({checkpoint}) is not reachable from this machine"
    from retina.analysis.loss_distribution import collect_logits, loss_distribution  # torch loads only when there is a model to run

    from . import plots
    dist = loss_distribution(collect_logits(checkpoint, max_images=FIGURE4_IMAGES))
    plots.plot_loss_distribution(dist, path, label)
    neg, pos = dist["negatives"], dist["positives"]
    return (f"loss distribution (Figure 4) of {label} on {FIGURE4_IMAGES} validation images: the easiest 80% of "
            f"negatives carry {100 * float(neg[2.0][160]):.1f}% of their loss at gamma 2 vs "
            f"{100 * float(neg[0.0][160]):.1f}% at gamma 0; of positives {100 * float(pos[2.0][160]):.1f}% vs "
            f"{100 * float(pos[0.0][160]):.1f}%")


SEED_CHECK = "seed_check.md"


def write_index(out: Path) -> None:
    """``<out>/README.md``: every sweep reported under ``out`` (from their summary.json)."""
    lines = ["# Results", "",
             "Generated by `python -m orchestrator report` from the MLflow store; do not edit by hand. "
             "Each sweep's folder holds `table.md`, `table.csv`, `table.tex`, its plots and the AP curves "
             "(`ap_curves_<table>.png`). The paper's own numbers are shipped with the code "
             "(`orchestrator/report/paper_tables/`). Every run below is far smaller than the paper's (see each "
             "sweep's settings): what can be compared is the ordering of rows and the paper's claims, not absolute "
             "AP.", "", VERDICT_RULES, ""]
    for summary_file in sorted(out.glob("*/summary.json")):
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError:
            continue
        name, s = summary["sweep"], summary["settings"]
        lines += [f"## [{name}]({name}/table.md)", "",
                  f"- settings: profile {s['profile']}; data {s['data']}; {s['model']}; backbone "
                  f"{s.get('backbone', '?')}; {s['iterations']} iterations, batch {s['batch_size']}; hardware "
                  f"{s['hardware']}; {s['train_hours']} h training, {s['gpu_hours']} GPU-hours; code "
                  f"{s['code_version']}" + (f" ({'; '.join(s['code_flags'])})" if s.get("code_flags") else "")
                  + (f"; overrides `{s['overrides']}`" if s.get("overrides") else "")
                  + f"; variant {s.get('variant', 'default')}, seeds {s.get('seeds', '?')}"]
        for t, vs in summary["verdicts"].items():
            for v in vs:
                lines.append(f"- {t}: {v['claim']}: **{v['mark']}** ({v['detail']})")
        for f, what in summary.get("plots", {}).items():
            lines.append(f"- plot [{f}]({name}/{f}): {what}" if not what.startswith("skipped")
                         else f"- plot {f}: {what}")
        lines.append("")
    if (out / SEED_CHECK).is_file():  # written by studies/seed_check.py, not by the report
        lines += ["## Other seeds", "", f"[{SEED_CHECK}]({SEED_CHECK}): each committed verdict that holds, rerun on "
                  "other seeds (`python studies/seed_check.py SWEEP --seed N`).", ""]
    (out / "README.md").write_text("\n".join(lines))
