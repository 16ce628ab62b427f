"""Every default a caller can override, in one place.

Changing one here changes it for the CLI, the HTTP API, batch and Spark scoring, the
pyfunc, training and the saved decision rule alike.
"""

#: Integrated-gradients quadrature points per explanation, the default of the run config's
#: ``ig_steps`` (used by serving and by the faithfulness evaluation). Cost grows linearly
#: (about this many forward + backward passes per token window). One point (the gradient
#: at the midpoint of the straight path, times input - baseline) ranked words as faithfully
#: as 16 on 40 held-out items of the fine-tuned MiniLM (ERASER comprehensiveness 0.064 vs
#: 0.067) at 3.3x a prediction instead of 36x; its attributions do not sum to the margin
#: change (completeness needs ~16 points), so weights rank words, not logits exactly
#: (experiments/README.md, issue 11).
IG_STEPS = 1
#: Evidence spans per direction.
TOP_K = 5
#: The one "too little input" rule (:mod:`imr_outcome.model.decision`): a case summary of
#: fewer whitespace-separated words than this gets the short-summary warning, and the
#: answer abstains ("insufficient information") for models that read the summary.
MIN_SUMMARY_WORDS = 20
#: Distinct clinical terms (:func:`imr_outcome.model.warnings.clinical_terms`) a request
#: needs; requests are short ("Norco 10/325mg #90", "TENS unit"), so one is enough.
MIN_REQUEST_CLINICAL_TERMS = 1
#: Distinct clinical terms a non-empty summary needs before it counts as clinical text.
MIN_SUMMARY_CLINICAL_TERMS = 2
#: Longest accepted request or summary, in characters (a long DWC case summary is about
#: 10,000 characters; 100,000 leaves room while bounding memory and time per item).
MAX_TEXT_CHARS = 100_000
#: Similar past decisions returned per item.
SIMILAR_K = 5
