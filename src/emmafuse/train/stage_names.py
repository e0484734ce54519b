"""The training stages, once: their names, run order and fixed seed ids.

:class:`Stage` is the one list every part of training uses: the trainer runs the stages in its
order (a stage that is switched off is skipped), logs and ``log.jsonl`` records name them by
value, the run folder keeps one sub-folder per stage (``<out>/<stage>/``), and the export lists
the steps of each finished stage. The seed ids are part of the data pipeline's identity
(resuming a run reproduces its batches), so they never change, whatever the order.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Stage", "STAGES", "STAGE_SEED_IDS", "stage_seed"]


class Stage(str, Enum):
    """A training stage; a ``str`` equal to its name (``Stage.FUSER == "fuser"``)."""

    BOOTSTRAP = "bootstrap"  #: optional: a conventional-loss U-Fuser as a pseudo-GT source
    WARM_START = "warm_start"  #: optional: the U-Fuser fitted to one pseudo-GT source
    SENSING = "sensing"  #: the paper's stage II: the sensing nets A_i, A_v
    FUSER = "fuser"  #: the paper's stage III: the equivariant U-Fuser

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def seed_id(self) -> int:
        """The stage's fixed seed component (historical numbering; never renumbered)."""
        return STAGE_SEED_IDS[self.value]


#: Run order (the order :class:`Stage` lists them in).
STAGES: tuple[Stage, ...] = tuple(Stage)

#: Fixed per-stage seed component, by stage name.
STAGE_SEED_IDS: dict[str, int] = {"sensing": 1, "fuser": 2, "bootstrap": 3, "warm_start": 4}


def stage_seed(seed: int, stage: str, rank: int = 0) -> int:
    """The seed of ``stage``'s random streams in process ``rank`` of a run seeded ``seed``."""
    return (seed * 1_000_003 + STAGE_SEED_IDS[stage] * 7919 + rank * 104_729) % (2**63)
