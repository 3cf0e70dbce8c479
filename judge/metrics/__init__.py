"""Pure metrics for judging the judges: ProcessBench scores, bootstrap and Wilson intervals,
error localisation, inter-rater agreement and calibration. One metric family per module."""

from .agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal
from .bootstrap import (ProcessBenchIntervals, ProcessBenchResamples, bootstrap_interval,
                        percentile_interval, processbench_bootstrap, processbench_resamples,
                        resample_indices)
from .calibration import CalibrationBin, expected_calibration_error, reliability_table
from .intervals import Interval, weighted_wilson_interval, wilson_interval
from .localization import Localization, localization
from .processbench import ProcessBenchScores, harmonic_f1, processbench_scores, subset_hits

__all__ = [
    "CalibrationBin", "Interval", "Localization", "ProcessBenchIntervals", "ProcessBenchResamples",
    "ProcessBenchScores", "bootstrap_interval", "cohen_kappa", "expected_calibration_error",
    "fleiss_kappa", "harmonic_f1", "krippendorff_alpha_nominal", "localization",
    "percentile_interval", "processbench_bootstrap", "processbench_resamples",
    "processbench_scores", "reliability_table", "resample_indices", "subset_hits",
    "weighted_wilson_interval", "wilson_interval",
]
