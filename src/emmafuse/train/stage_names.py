"""The training stages, once: their run order and their fixed seed ids.

The trainer runs them in :data:`STAGES` order (a stage that is switched off is skipped), the
run folder keeps one sub-folder per stage, and the export lists the steps of each finished
stage. The seed ids are part of the data pipeline's identity (resuming a run reproduces its
batches), so they never change, whatever the order.
"""

from __future__ import annotations

__all__ = ["STAGES", "STAGE_SEED_IDS"]

#: Run order: the optional bootstrap and warm start, then the paper's stage II and stage III.
STAGES: tuple[str, ...] = ("bootstrap", "warm_start", "sensing", "fuser")

#: Fixed per-stage seed component (historical numbering; do not renumber).
STAGE_SEED_IDS: dict[str, int] = {"sensing": 1, "fuser": 2, "bootstrap": 3, "warm_start": 4}
