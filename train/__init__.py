"""Training, evaluation and experiment tracking (``imr_outcome.train``)."""
