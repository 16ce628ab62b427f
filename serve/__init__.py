"""Inference from a trained artifact (``imr_outcome.serve``)."""
