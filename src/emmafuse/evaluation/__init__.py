"""Scoring fused images with :mod:`emmafuse.metrics`, as the de-facto evaluator does.

Four parts, one module each:

- :mod:`~emmafuse.evaluation.reader`: image files read bit for bit as the reference evaluator
  reads them (``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``), a thin variant of
  the one file reader :func:`emmafuse.image_io.read_image`;
- :mod:`~emmafuse.evaluation.planning`: every check before any work: metrics, row names,
  pairing the source folders and matching fused folders by stem (:func:`plan_scoring`);
- :mod:`~emmafuse.evaluation.scoring`: scoring every pair (:func:`score_plan`, or
  :func:`score_folders` for both steps), optionally fusing the pairs first;
- :mod:`~emmafuse.evaluation.report`: ranking and the Markdown / CSV / JSON tables.

The ``emmafuse eval`` command (:mod:`emmafuse.cli.eval`) is a thin layer over these.
"""

from emmafuse.evaluation.reader import read_gray_reference
from emmafuse.evaluation.report import (
    format_csv,
    format_json,
    format_markdown,
    rank_methods,
    skip_summary,
    skipped_pairs,
)
from emmafuse.evaluation.planning import EvalError, ScoringPlan, index_folder, plan_scoring
from emmafuse.evaluation.scoring import EvalReport, MethodResult, score_folders, score_plan

__all__ = [
    "EvalError",
    "EvalReport",
    "MethodResult",
    "ScoringPlan",
    "format_csv",
    "format_json",
    "format_markdown",
    "index_folder",
    "plan_scoring",
    "rank_methods",
    "read_gray_reference",
    "score_folders",
    "score_plan",
    "skip_summary",
    "skipped_pairs",
]
