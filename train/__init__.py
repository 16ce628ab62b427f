"""Fitting, evaluation and experiment tracking (``imr_outcome.train``); what a saved model
is loaded and scored with is in ``imr_outcome.model``."""
