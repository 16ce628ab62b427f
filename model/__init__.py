"""What serving loads (``imr_outcome.model``): the model object, the classifier kinds, the
transformer on torch and ONNX Runtime, explainers and the decision bands.

Nothing here imports ``imr_outcome.train``, which holds the fitting: run configs to
estimators, fine-tuning, calibration, threshold and band fitting, ONNX export, evaluation
and tracking.
"""
