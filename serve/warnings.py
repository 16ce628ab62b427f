"""Reasons to trust a prediction less: warning texts, the clinical lexicon, the source check.

Every :class:`~imr_outcome.serve.schemas.Prediction` carries warnings, stable
human-readable strings, where they apply (see :meth:`Predictor.warnings
<imr_outcome.serve.predictor.Predictor.warnings>`):

- :data:`WARN_SHORT_SUMMARY`: the case summary has fewer than :data:`MIN_SUMMARY_WORDS`
  words (models that read the summary).
- ``"input split into N windows"`` (:func:`windows_warning`): windowed kinds only, the
  text does not fit one window of ``max_length`` tokens, so window logits are aggregated.
- :data:`WARN_REQUEST_VOCABULARY` / :data:`WARN_SUMMARY_VOCABULARY`: the text holds almost
  no clinical vocabulary (see :func:`clinical_terms`), so it is unlike any training text.
- :data:`WARN_DMHC_MODEL_ON_DWC` / :data:`WARN_DWC_MODEL_ON_DMHC`: the input comes from
  another source than the model was trained on (see :func:`input_source`).
- ``"text unlike the training items: encoder distance ..."`` (:func:`encoder_ood_warning`):
  models saved with an out-of-distribution detector
  (:class:`~imr_outcome.train.ood.MahalanobisOod`), when the input's encoder embedding is at
  least the 99th percentile of the training items' Mahalanobis distances away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from imr_outcome.data.model_input import MetadataValue

#: Summaries with fewer whitespace-separated words than this get :data:`WARN_SHORT_SUMMARY`.
MIN_SUMMARY_WORDS = 30
#: Distinct clinical terms (see :func:`clinical_terms`) a request needs; requests are short
#: ("Norco 10/325mg #90", "TENS unit"), so one is enough.
MIN_REQUEST_CLINICAL_TERMS = 1
#: Distinct clinical terms a non-empty summary needs.
MIN_SUMMARY_CLINICAL_TERMS = 2

WARN_SHORT_SUMMARY = "summary too short to be informative"
WARN_REQUEST_VOCABULARY = "request unlike training data: no clinical vocabulary"
WARN_SUMMARY_VOCABULARY = "summary unlike training data: almost no clinical vocabulary"
WARN_DMHC_MODEL_ON_DWC = (
    "model trained on DMHC health-plan cases, input looks like a DWC workers' compensation letter"
)
WARN_DWC_MODEL_ON_DMHC = (
    "model trained on DWC workers' compensation letters, input looks like a DMHC health-plan case"
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


def windows_warning(n_windows: int) -> str:
    """The warning for an input cut into ``n_windows`` (> 1) token windows."""
    return f"input split into {n_windows} windows"


def encoder_ood_warning(distance: float, threshold: float, quantile: float) -> str:
    """The warning for an input whose encoder embedding lies far from the training items
    (Mahalanobis ``distance`` at or above ``threshold``, the training ``quantile``)."""
    return (
        f"text unlike the training items: encoder distance {distance:.1f} >= {threshold:.1f} "
        f"(the {quantile:.0%} quantile of training items)"
    )


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
    for word in _WORD_RE.findall(lowered):
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
