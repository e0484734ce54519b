"""The seeded parity weights of the tests (:mod:`emmafuse.testing`, shared with the benchmarks and scripts)."""

from emmafuse.testing import PARITY_SEED, seeded_state_dict

__all__ = ["PARITY_SEED", "seeded_state_dict"]
