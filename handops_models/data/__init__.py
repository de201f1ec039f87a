"""Hand data: synthetic hands, the real datasets' formats, training targets and transforms."""

from handops_models.data.sample import SAMPLE_KEYS, check_sample

__all__ = ["SAMPLE_KEYS", "check_sample"]
