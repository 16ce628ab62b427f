"""Coarse request categories: subgroup reports, the outcome rates and like-first ranking
of similar decisions, and the ``two_stage`` model's request features
(:mod:`imr_outcome.data.request_features`). Read from the request only, never from an
outcome or a rationale.

The categories follow the service groups of the DWC IMR annual reports (pharmaceuticals,
physical medicine, diagnostic imaging and testing, injections, surgery, durable medical
equipment, and others; see "2017 Independent Medical Review (IMR) Report: Analysis of
2016 Data", California DWC). Rules are ordered keyword matches: the first that fits wins,
so a few narrow rules come before the broad one of another category (a consultation about
surgery is evaluation and management; ultrasound given in sessions is physical medicine).
"""

from __future__ import annotations

import re

from imr_outcome.data.drugs import DRUG_NAME

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        # A consultation about surgery is a visit, not the operation it may lead to.
        "evaluation and management",
        re.compile(
            r"^(?!associated surgical service)(?=.*\b(?:consult\w*|evaluation|eval|referral|"
            r"TOC)\b).*\b(?:\w*surgeon|surgery|surgical|specialist)\b",
            re.I,
        ),
    ),
    (
        "surgery",
        re.compile(
            r"\b(?:surgery|surgical|arthroscop\w*|fusion|repair|(?<!myofascial )release|"
            r"reconstruction|replacement|fixation|laminectomy|discectomy|decompression|"
            r"excision|\w*ectomy|\w*plasty|assistant surgeon|assistant PA|PA assist\w*)\b",
            re.I,
        ),
    ),
    (
        "injection",
        re.compile(
            r"\b(?:injections?|epidural|block|blocks|ESI|radiofrequency|ablation|"
            r"trigger point|botox|PRP)\b",
            re.I,
        ),
    ),
    (
        "behavioral health",
        re.compile(r"\bpsycholog\w* test\w*", re.I),
    ),
    (
        # Ultrasound given in sessions is a physical-therapy modality, not imaging.
        "physical medicine",
        re.compile(r"\b(?:pulsed|therapeutic) ultrasound\b|\bultrasound \d+ ?(?:times|x)\b", re.I),
    ),
    (
        "imaging and diagnostics",
        re.compile(
            r"\b(?:MRI|CT|x-?rays?|scan|ultrasound|EMG|NCS|NCV|SSEP|imaging|radiograph\w*|"
            r"arthrogram|bone scan|lab\w*|urine|urinalysis|UA|drug screen\w*|test\w*|study|"
            r"studies|CBC|CMP|BMP|PTT|\w*panel|EKG|ECG|electrocardiogram|EEG|"
            r"electroencephalogram)\b",
            re.I,
        ),
    ),
    (
        "physical medicine",
        re.compile(
            r"\b(?:physical therapy|PT|OT|occupational therapy|chiro\w*|acupuncture|"
            r"physiotherapy|massage|aquatic|manipulation|manual therapy|traction|"
            r"work hardening|functional restoration|TENS|e-?stim\w*|electrical (?:muscle )?"
            r"stimulation|infrared|therapeutic exercise|myofascial|shockwave|ESWT|"
            r"\w*stimulation therapy|hand therapy)\b",
            re.I,
        ),
    ),
    (
        "durable medical equipment",
        re.compile(
            r"\b(?:braces?|wheelchair|walker|cane|commode|chair|scooter|orthotic\w*|splint|"
            r"cushion|pillow|mattress|bed|(?<!rehabilitation )unit|device|kit|pads?|"
            r"hearing aids?|DME|purchase|rental|supports?|wraps?|slings?|gloves|wipes|"
            r"workstation)\b",
            re.I,
        ),
    ),
    (
        "pharmaceuticals",
        re.compile(
            r"\b\d+(?:\.\d+)?\s?(?:mg|mcg|ml|g|gm|grams)\b|\d%|#\s?\d+|"
            r"\b(?:tablets?|capsules?|cream|gel|ointment|patch\w*|refills?|compound\w*|"
            r"oral suspension|medication(?!s? management)\w*)\b|" + DRUG_NAME.pattern,
            re.I,
        ),
    ),
    (
        "evaluation and management",
        re.compile(
            r"\b(?:consult\w*|evaluation|eval|referral|TOC|visit|follow[- ]up|office|"
            r"clearance|exam\w*)\b",
            re.I,
        ),
    ),
    (
        "behavioral health",
        re.compile(r"\b(?:psych\w*|cognitive behavioral|CBT|biofeedback|counsel\w*)\b", re.I),
    ),
    (
        "home and facility care",
        re.compile(
            r"\b(?:home health|home aide|nursing|nurse|RN|wound care|facility|inpatient|"
            r"hospitali[sz]ation|rehabilitation unit|transportation)\b",
            re.I,
        ),
    ),
)

#: Every category :func:`request_category` can return.
CATEGORIES: tuple[str, ...] = (*dict.fromkeys(name for name, _ in _RULES), "other")


def request_category(request: str) -> str:
    """Assign a coarse service category to a request text.

    Args:
        request: the disputed request, e.g. ``"MRI of the lumbar spine"``.

    Returns:
        One of :data:`CATEGORIES`; ``"other"`` when no rule matches.
    """
    for name, pattern in _RULES:
        if pattern.search(request):
            return name
    return "other"
