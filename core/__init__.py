"""imr-outcome: predict California Independent Medical Review (IMR) outcomes.

The code lives in four folders mapped under this import root:

- ``imr_outcome.data``: letters and tables -> itemized, leakage-audited datasets.
- ``imr_outcome.model``: what serving loads: the model object, the classifier kinds,
  explainers and the decision bands.
- ``imr_outcome.train``: fitting: configs -> estimators, fine-tuning, calibration,
  evaluation, retraining and MLflow tracking.
- ``imr_outcome.serve``: loading a trained artifact and predicting with evidence.
"""

__version__ = "0.1.0"
