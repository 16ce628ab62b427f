"""imr-outcome: predict California Independent Medical Review (IMR) outcomes.

The code lives in three folders mapped under this import root:

- ``imr_outcome.data``: letters and tables -> itemized, leakage-audited datasets.
- ``imr_outcome.train``: baselines, fine-tuning, evaluation and MLflow tracking.
- ``imr_outcome.serve``: loading a trained artifact and predicting with evidence.
"""

__version__ = "0.1.0"
