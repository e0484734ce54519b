"""The report of a scoring run: ranking, Markdown / CSV / JSON tables, skip summaries.

Ranking: each metric ranks the methods (1 = best, MSE lower is better, ties share the mean
rank, NaN last); methods are ordered by the mean of their ranks over the reported metrics.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from emmafuse.evaluation.scoring import EvalReport
from emmafuse.metrics import HIGHER_IS_BETTER

__all__ = ["rank_methods", "format_markdown", "format_csv", "format_json", "skip_summary", "skipped_pairs"]


def rank_methods(means: Sequence[dict[str, float]], metrics: Sequence[str]) -> list[float]:
    """Mean rank of each method over ``metrics`` (1 = best; MSE ranks ascending).

    Ties share the average of their ranks; a NaN score ranks last.
    """
    n = len(means)
    totals = np.zeros(n)
    for m in metrics:
        vals = np.array([row[m] for row in means], dtype=np.float64)
        key = -vals if HIGHER_IS_BETTER[m] else vals.copy()
        key[np.isnan(key)] = np.inf
        ranks = np.empty(n)
        for i in range(n):
            less = np.sum(key < key[i])
            equal = np.sum(key == key[i])
            ranks[i] = less + (equal + 1) / 2.0
        totals += ranks
    return [float(t) for t in totals / max(len(metrics), 1)]


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}"


def _rows(report: EvalReport) -> list[dict[str, Any]]:
    means = [m.means(report.metrics) for m in report.methods]
    ranks = rank_methods(means, report.metrics) if len(means) > 1 else [1.0] * len(means)
    rows: list[dict[str, Any]] = [
        {
            "method": m.name,
            "mean_rank": r,
            "n": len(m.per_image),
            "skipped": len(m.skipped),
            "means": mu,
            "source": m.source,
        }
        for m, mu, r in zip(report.methods, means, ranks, strict=True)
    ]
    rows.sort(key=lambda row: row["mean_rank"])
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def format_markdown(report: EvalReport) -> str:
    """A Markdown table (best value of each column in bold when several methods are compared)."""
    rows = _rows(report)
    multi = len(rows) > 1
    arrows = {m: ("↑" if HIGHER_IS_BETTER[m] else "↓") for m in report.metrics}
    head = (["Rank", "Method", "Mean rank"] if multi else ["Method"]) + ["N"]
    head += [f"{m} {arrows[m]}" for m in report.metrics]
    best = {}
    for m in report.metrics:
        vals = [r["means"][m] for r in rows if not math.isnan(r["means"][m])]
        if vals:
            best[m] = max(vals) if HIGHER_IS_BETTER[m] else min(vals)
    lines = [f"### {report.set_name}: {report.pairs} pairs, preset '{report.preset}'", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i < (3 if multi else 1) else "---:" for i in range(len(head))) + "|")
    for r in rows:
        cells = [str(r["rank"]), r["method"], f"{r['mean_rank']:.2f}"] if multi else [r["method"]]
        cells.append(str(r["n"]))
        for m in report.metrics:
            txt = _fmt(r["means"][m])
            cells.append(f"**{txt}**" if multi and m in best and r["means"][m] == best[m] else txt)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Protocol:")
    for k, v in report.protocol.items():
        lines.append(f"- {k}: {v}")
    lines.extend(_skip_lines(report, rows, prefix="- "))
    return "\n".join(lines) + "\n"


def skip_summary(report: EvalReport, prefix: str = "") -> list[str]:
    """Summary lines: unpaired source files, and per method how many (and which) pairs were skipped."""
    return _skip_lines(report, _rows(report), prefix)


def _skip_lines(report: EvalReport, rows: list[dict[str, Any]], prefix: str) -> list[str]:
    out = []
    if report.unpaired:
        names = ", ".join(report.unpaired[:10]) + (", ..." if len(report.unpaired) > 10 else "")
        out.append(f"{prefix}{len(report.unpaired)} source file(s) without a partner: {names}")
    by_name = {m.name: m for m in report.methods}
    for r in rows:
        if r["skipped"]:
            stems = sorted(by_name[r["method"]].skipped)
            names = ", ".join(stems[:10]) + (", ..." if len(stems) > 10 else "")
            out.append(f"{prefix}{r['method']}: {r['skipped']} of {report.pairs} pair(s) skipped ({names})")
    return out


def skipped_pairs(report: EvalReport) -> list[str]:
    """One line per skipped pair with its reason (a source problem once, not once per method)."""
    lines = [f"skipped pair {stem} for every method: {why}" for stem, why in sorted(report.source_errors.items())]
    for m in report.methods:
        for stem, why in sorted(m.skipped.items()):
            if report.source_errors.get(stem) != why:
                lines.append(f"{m.name}: skipped pair {stem}: {why}")
    return lines


def _json_safe(v: float) -> float | None:
    return v if math.isfinite(v) else None


def format_json(report: EvalReport) -> str:
    """JSON document; non-finite values (PSNR of identical images, empty means) become null."""
    rows = _rows(report)
    doc = {
        "set": report.set_name,
        "preset": report.preset,
        "pairs": report.pairs,
        "metrics": report.metrics,
        "protocol": report.protocol,
        "methods": [
            {
                "rank": r["rank"],
                "method": r["method"],
                "mean_rank": r["mean_rank"],
                "n": r["n"],
                "skipped": r["skipped"],
                "source": r["source"],
                "means": {m: _json_safe(r["means"][m]) for m in report.metrics},
            }
            for r in rows
        ],
        "unpaired": report.unpaired,
        "skipped": [
            {"method": m.name, "pair": stem, "reason": why}
            for m in report.methods
            for stem, why in sorted(m.skipped.items())
        ],
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def format_csv(report: EvalReport) -> str:
    """CSV, one row per method, full precision (``inf``/``nan`` spelled out)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "preset", "rank", "method", "mean_rank", "n", "skipped", *report.metrics])
    for r in _rows(report):
        w.writerow(
            [report.set_name, report.preset, r["rank"], r["method"], repr(r["mean_rank"]), r["n"], r["skipped"]]
            + [repr(r["means"][m]) for m in report.metrics]
        )
    return buf.getvalue()
