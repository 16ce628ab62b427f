"""Reasons to trust a prediction less: warnings, the clinical lexicon, the source check.

Every :class:`~imr_outcome.model.prediction.Prediction` carries its warnings twice (see
:meth:`Predictor.warnings <imr_outcome.serve.predictor.Predictor.warnings>`):
``warnings``, the plain-language messages a person reads (each says what to do), and
``warning_details``, one :class:`WarningDetail` per message with a stable ``code`` and the
``figures`` behind it. The codes (:data:`WarningCode`):

- ``no_summary`` / ``short_summary`` (:func:`short_summary_warning`): there is no case
  summary, or it has fewer than the decision rule's ``min_summary_words`` words
  (:data:`~imr_outcome.model.defaults.MIN_SUMMARY_WORDS` by default; models that read the
  summary). The same rule makes the band abstain (:mod:`imr_outcome.model.decision`).
- ``split_into_windows`` (:func:`windows_warning`): windowed kinds only, the text does not
  fit one window of ``max_length`` tokens, so window logits are aggregated.
- ``request_not_clinical`` / ``summary_not_clinical`` (:func:`vocabulary_warning`): the
  text holds almost no clinical vocabulary (see :func:`clinical_terms`), so it is unlike
  any training text.
- ``dmhc_model_on_dwc`` / ``dwc_model_on_dmhc`` (:func:`source_warning`): the input comes
  from another source than the model was trained on (see :func:`input_source`).
- ``unlike_training_text`` (:func:`encoder_ood_warning`): models saved with an
  out-of-distribution detector (:class:`~imr_outcome.model.ood.MahalanobisOod`), when the
  input's encoder embedding is at least the 99th percentile of the training items'
  Mahalanobis distances away.
- ``evidence_not_computed`` (:func:`evidence_budget_warning`): the HTTP API skipped the
  evidence of an item over its ``max_explain_chars``.
- ``custom_check`` (:func:`custom_warning`): a caller's own out-of-distribution hook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imr_outcome.data.model_input import MetadataValue
from imr_outcome.model.defaults import (
    MIN_REQUEST_CLINICAL_TERMS,
    MIN_SUMMARY_CLINICAL_TERMS,
    MIN_SUMMARY_WORDS,
)

#: Metadata fields only the DMHC table has; their presence marks an input as DMHC.
DMHC_ONLY_FIELDS: tuple[str, ...] = (
    "age_range",
    "imr_type",
    "diagnosis_category",
    "diagnosis_subcategory",
)
#: Metadata fields only DWC letters have (an exact age in years); they mark an input as DWC.
DWC_ONLY_FIELDS: tuple[str, ...] = ("patient_age",)

Source = Literal["dwc", "dmhc"]

#: Warning codes, stable for machines (the message wording may change). A code names the
#: reason; the figures behind it go in :attr:`WarningDetail.figures`.
WarningCode = Literal[
    "no_summary",
    "short_summary",
    "split_into_windows",
    "request_not_clinical",
    "summary_not_clinical",
    "dmhc_model_on_dwc",
    "dwc_model_on_dmhc",
    "unlike_training_text",
    "evidence_not_computed",
    "custom_check",
]

WARN_SHORT_SUMMARY = (
    "The case summary is very short, so the model has little to go on; treat the estimate "
    "as rough, or add the full case summary."
)
WARN_NO_SUMMARY = (
    "There is no case summary, so the model read the request alone; add the case summary "
    "from the denial or the records for an estimate about this case."
)
WARN_REQUEST_VOCABULARY = (
    "The request names no treatment, test, drug or body part the model knows; check that it "
    "says what was requested, and treat the estimate as rough."
)
WARN_SUMMARY_VOCABULARY = (
    "The case summary has almost no medical wording, unlike the case summaries the model "
    "learned from; treat the estimate as rough."
)
WARN_DMHC_MODEL_ON_DWC = (
    "This model learned from health-plan (DMHC) cases, but this looks like a workers' "
    "compensation (DWC) letter; use a model trained on DWC letters, or treat the estimate "
    "as rough."
)
WARN_DWC_MODEL_ON_DMHC = (
    "This model learned from workers' compensation (DWC) letters, but this looks like a "
    "health-plan (DMHC) case; use a model trained on DMHC cases, or treat the estimate as "
    "rough."
)
WARN_WINDOWS = (
    "The text is longer than the model reads at once, so it was read in overlapping parts "
    "and their results combined; the estimate may miss links between distant passages."
)
WARN_UNLIKE_TRAINING = (
    "This text reads unlike the IMR letters the model learned from; treat the estimate as rough."
)
WARN_EVIDENCE_NOT_COMPUTED = (
    "Evidence was not computed because the text is longer than this server explains; the "
    "estimate itself uses the whole text. Shorten the summary to see evidence."
)

#: Every code's message, for the codes whose message is fixed.
MESSAGES: dict[str, str] = {
    "no_summary": WARN_NO_SUMMARY,
    "short_summary": WARN_SHORT_SUMMARY,
    "split_into_windows": WARN_WINDOWS,
    "request_not_clinical": WARN_REQUEST_VOCABULARY,
    "summary_not_clinical": WARN_SUMMARY_VOCABULARY,
    "dmhc_model_on_dwc": WARN_DMHC_MODEL_ON_DWC,
    "dwc_model_on_dmhc": WARN_DWC_MODEL_ON_DMHC,
    "unlike_training_text": WARN_UNLIKE_TRAINING,
    "evidence_not_computed": WARN_EVIDENCE_NOT_COMPUTED,
}


class WarningDetail(BaseModel):
    """One reason to trust a prediction less, for people and for machines.

    Attributes:
        code: what kind of reason (see :data:`WarningCode`); stable across releases.
        message: what it means and what to do, in plain language (the text a person reads;
            also listed in ``Prediction.warnings``).
        figures: the numbers behind it, by name (e.g. ``{"summary_words": 12,
            "min_summary_words": 30}``); units are in the names' documentation below.
    """

    model_config = ConfigDict(frozen=True)

    code: WarningCode
    message: str
    figures: dict[str, int | float] = Field(default_factory=dict)


def short_summary_warning(
    summary_words: int, min_summary_words: int = MIN_SUMMARY_WORDS
) -> WarningDetail:
    """A summary of ``summary_words`` (< ``min_summary_words``) whitespace-separated words;
    code ``no_summary`` when there is none, else ``short_summary``; figures
    ``summary_words``, ``min_summary_words``."""
    return WarningDetail(
        code="no_summary" if summary_words == 0 else "short_summary",
        message=WARN_NO_SUMMARY if summary_words == 0 else WARN_SHORT_SUMMARY,
        figures={"summary_words": summary_words, "min_summary_words": min_summary_words},
    )


def windows_warning(n_windows: int) -> WarningDetail:
    """An input cut into ``n_windows`` (> 1) token windows; figure ``windows``."""
    return WarningDetail(
        code="split_into_windows", message=WARN_WINDOWS, figures={"windows": n_windows}
    )


def vocabulary_warning(field: Literal["request", "summary"], terms: int) -> WarningDetail:
    """A ``field`` with only ``terms`` distinct clinical terms (see :func:`clinical_terms`);
    figures ``clinical_terms``, ``min_clinical_terms``."""
    if field == "request":
        return WarningDetail(
            code="request_not_clinical",
            message=WARN_REQUEST_VOCABULARY,
            figures={"clinical_terms": terms, "min_clinical_terms": MIN_REQUEST_CLINICAL_TERMS},
        )
    return WarningDetail(
        code="summary_not_clinical",
        message=WARN_SUMMARY_VOCABULARY,
        figures={"clinical_terms": terms, "min_clinical_terms": MIN_SUMMARY_CLINICAL_TERMS},
    )


def source_warning(input_from: Source, trained_on: Source) -> WarningDetail:
    """An input from ``input_from`` scored by a model trained on the other source."""
    if input_from == trained_on:
        raise ValueError(f"no warning: input and model are both {input_from}")
    if input_from == "dwc":
        return WarningDetail(code="dmhc_model_on_dwc", message=WARN_DMHC_MODEL_ON_DWC)
    return WarningDetail(code="dwc_model_on_dmhc", message=WARN_DWC_MODEL_ON_DMHC)


def encoder_ood_warning(distance: float, threshold: float, quantile: float) -> WarningDetail:
    """An input whose encoder embedding lies far from the training items: Mahalanobis
    ``distance`` at or above ``threshold``, the training ``quantile`` (in (0, 1)) of the
    training items' distances; figures ``encoder_distance``, ``threshold``, ``quantile``."""
    return WarningDetail(
        code="unlike_training_text",
        message=WARN_UNLIKE_TRAINING,
        figures={"encoder_distance": distance, "threshold": threshold, "quantile": quantile},
    )


def evidence_budget_warning(n_chars: int, max_explain_chars: int) -> WarningDetail:
    """An item of ``n_chars`` characters (request + summary) predicted without evidence
    because it is over ``max_explain_chars``; figures ``chars``, ``max_explain_chars``."""
    return WarningDetail(
        code="evidence_not_computed",
        message=WARN_EVIDENCE_NOT_COMPUTED,
        figures={"chars": n_chars, "max_explain_chars": max_explain_chars},
    )


def custom_warning(message: str) -> WarningDetail:
    """A warning from a caller's own check (``Predictor(ood_detector=...)``), as given."""
    return WarningDetail(code="custom_check", message=message)


# ------------------------------------------------------------------ clinical vocabulary

#: A small clinical lexicon (lower case) drawn from the vocabulary of IMR requests and case
#: summaries: anatomy, findings, care, tests, equipment, common drugs in workers'
#: compensation (MTUS formulary), compounded products, and the DMHC treatment categories
#: (including the table's own spelling "Neurosugery"). It is a coarse
#: "is this clinical text at all" check, not a terminology: :func:`clinical_terms` adds
#: dose patterns and medical word endings for everything the list misses. On the project's
#: dataset (444 DWC items, 19,088 DMHC rows) the request check flags 1.1% / 0.2% of rows
#: (a shower chair, a surgical assistant; "Not Applicable") and the summary check none.
_LEXICON_WORDS = """
    abdomen abdominal ankle arm back bladder bone brain breast cartilage cervical chest
    colon cuff disc disk ear elbow extremity extremities eye foot feet finger hand head
    heart hip jaw joint joints kidney knee knees leg legs ligament liver lumbar lung
    meniscus muscle muscles neck nerve nerves paraspinal pelvic pelvis prostate rotator
    sacral sacroiliac shoulder shoulders skin spinal spine teeth tendon thoracic thumb tooth
    uterus vertebral wrist
    ache acute allergy anxiety asthma cancer chronic condition deficit depression diabetes
    diagnosis diagnoses diagnosed disease disorder dysfunction edema fatigue fever fracture
    headache herniation hypertension impairment infection inflammation injured injuries
    injury insomnia instability lesion migraine numbness obesity pain painful paresthesia
    radiating radiculopathy sciatica spasm spasms sprain stenosis stiffness strain swelling
    symptom symptoms syndrome tear tenderness tingling trauma tumor weakness
    ablation acupuncture admission anesthesia arthrogram arthroscopic arthroscopy assessment
    biofeedback biopsy block blocks brace braces care chiropractic chiropractor clinic
    clinical clinician cognitive compound compounded consult consultation counseling cream
    crutches decompression dental dermatology detox diagnostic dme dosage dose durable
    electrodiagnostic emg epidural evaluation exam examination exercise facet fusion gym
    health home hospice hospital imaging implant infusion inpatient injection injections
    lab laboratory medical medication medications medicine mri ncv neurology neurosurgery
    nurse nursing oncology operative orthopedic orthotic orthotics orthosis outpatient
    patch patches patient pharmacy physical physician podiatry postoperative prescribed
    prescription procedure program prosthesis prosthetic provider psychiatric psychiatry
    psychological psychologist psychotherapy radiofrequency radiograph radiographs
    referral rehab rehabilitation replacement rhizotomy screening session sessions sleep
    stimulator surgeon surgery surgical tablet tablets tens therapist therapy topical
    transplant treatment ultrasound urgent urine visits walker wheelchair xray
    acetaminophen alprazolam ambien amitriptyline anaprox baclofen botox buprenorphine
    butrans capsaicin carisoprodol celebrex clonazepam colace cyclobenzaprine cymbalta
    diazepam diclofenac dilaudid docusate duloxetine elavil fentanyl fioricet flexeril
    flurbiprofen gabapentin hydrocodone hydromorphone ibuprofen imitrex insulin ketoprofen
    ketorolac lidocaine lidoderm lyrica medrol meloxicam menthoderm metformin methadone
    mobic morphine naproxen neurontin norco nucynta omeprazole ondansetron opana opioid
    opioids oxycodone oxycontin pantoprazole percocet prednisone pregabalin prilosec
    ranitidine senna soma suboxone sumatriptan tapentadol terocin tizanidine topamax
    topiramate toradol tramadol trazodone tylenol ultram valium voltaren xanax zanaflex
    zofran zolpidem
    deprizine dicopanol etodolac fanatrex ketophene synapryn tabradol
    aba aids behavioral bypass cardiac cardio cardiology carpal cbc cesarean clearance cmp
    commode coronary ecg ekg electrical embolization estim fibroid followup gloves graft
    grip gyn hearing idet jamar labs lenses ligation lithotripsy magnetic neurosugery ob
    obgyn op ophthalmology pacemaker pillow postop preop ptt ray sensory shockwave stents
    stim stimulation transcranial tubal tunnel urinalysis urology uterine vascular vein
    vision visit wipes
"""
CLINICAL_LEXICON: frozenset[str] = frozenset(_LEXICON_WORDS.split())

#: Dose and supply patterns: "550mg", "10/325 mg", "5%", "#60", "x6" (counts of units).
_DOSE_RE = re.compile(
    r"\b\d+(?:[.,/]\d+)*\s?(?:mg|mcg|ml|gm|cc|units?|%)(?!\w)|#\s?\d+|\bx\s?\d+\b",
    re.IGNORECASE,
)
#: Medical word endings (procedures, conditions, drug classes); words of 6+ letters only.
_MEDICAL_SUFFIX_RE = re.compile(
    r"^[a-z]{2,}(?:itis|ectomy|otomy|ostomy|plasty|scopy|graphy|gram|algia|opathy|pathy"
    r"|ology|osis|emia|oma|plegia|therapy|profen|oxacin|cillin|azepam|azolam|prazole|sartan"
    r"|statin|olol|pril|dipine|triptan|codone|morphone|caine|tidine|barbital|zumab|ximab)$"
)
_WORD_RE = re.compile(r"[a-z]+")


def clinical_terms(text: str) -> set[str]:
    """The distinct clinical terms in ``text``.

    A term is a lower-cased word in :data:`CLINICAL_LEXICON`, a word of six or more letters
    with a medical ending (``-itis``, ``-ectomy``, ``-opathy``, ``-profen``, ``-codone``,
    ...), or a dose/supply pattern (``550mg``, ``5%``, ``#60``, ``x6``).

    Args:
        text: any text.

    Returns:
        The terms found (dose patterns as matched); empty for non-clinical text.
    """
    lowered = text.lower()
    terms = {m.group(0).replace(" ", "") for m in _DOSE_RE.finditer(lowered)}
    for word in set(_WORD_RE.findall(lowered)):
        if word in CLINICAL_LEXICON or (len(word) >= 6 and _MEDICAL_SUFFIX_RE.match(word)):
            terms.add(word)
    return terms


def input_source(metadata: Mapping[str, MetadataValue], declared: Source | None) -> Source | None:
    """The data source an input comes from: declared, or inferred from its metadata.

    DMHC rows carry :data:`DMHC_ONLY_FIELDS` (age band, IMR type, diagnosis taxonomy) and
    never an exact age; DWC letters state an exact age (:data:`DWC_ONLY_FIELDS`) and have
    none of the DMHC fields.

    Args:
        metadata: the input's pre-filing metadata.
        declared: the source the caller states (e.g. ``"dwc"`` for a parsed letter).

    Returns:
        ``"dwc"``, ``"dmhc"``, or None when nothing tells.
    """
    if declared is not None:
        return declared
    present = {name for name, value in metadata.items() if value is not None and value != ""}
    if present & set(DMHC_ONLY_FIELDS):
        return "dmhc"
    if present & set(DWC_ONLY_FIELDS):
        return "dwc"
    return None
