"""Letters and tables -> itemized, leakage-audited datasets (``imr_outcome.data``).

This package knows nothing of models: it parses sources, isolates pre-filing text,
builds folds and writes a dataset card.
"""
