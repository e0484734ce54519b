"""Scoring fused images with :mod:`emmafuse.metrics`, as the de-facto evaluator does.

Three parts, one module each:

- :mod:`~emmafuse.evaluation.reader`: image files read bit for bit as the reference evaluator
  reads them (``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``);
- :mod:`~emmafuse.evaluation.scoring`: pairing the source folders, matching fused folders by
  stem and scoring every pair (:func:`score_folders`), optionally fusing the pairs first;
- :mod:`~emmafuse.evaluation.report`: ranking and the Markdown / CSV / JSON tables.

The ``emmafuse eval`` command (:mod:`emmafuse.cli.eval`) is a thin layer over these.
"""

from emmafuse.evaluation.reader import bgr_to_gray_like_cv2, read_gray_reference
from emmafuse.evaluation.report import (
    format_csv,
    format_json,
    format_markdown,
    rank_methods,
    skip_summary,
    skipped_pairs,
)
from emmafuse.evaluation.scoring import (
    EvalError,
    EvalReport,
    MethodResult,
    ScoringPlan,
    index_folder,
    plan_scoring,
    score_folders,
    score_plan,
)

__all__ = [
    "EvalError",
    "EvalReport",
    "MethodResult",
    "ScoringPlan",
    "bgr_to_gray_like_cv2",
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
