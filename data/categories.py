"""Coarse request categories for subgroup reports (never a model input).

The categories follow the service groups of the DWC IMR annual reports (pharmaceuticals,
physical medicine, diagnostic imaging and testing, injections, surgery, durable medical
equipment, and others; see "2017 Independent Medical Review (IMR) Report: Analysis of
2016 Data", California DWC). Rules are ordered keyword matches: the first that fits wins.
"""

from __future__ import annotations

import re

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "surgery",
        re.compile(
            r"\b(?:surgery|surgical|arthroscop\w*|fusion|repair|release|reconstruction|"
            r"replacement|fixation|laminectomy|discectomy|decompression|excision|-?ectomy|"
            r"-?plasty)\b",
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
        "imaging and diagnostics",
        re.compile(
            r"\b(?:MRI|CT|x-?rays?|scan|ultrasound|EMG|NCS|NCV|SSEP|imaging|radiograph\w*|"
            r"arthrogram|bone scan|lab\w*|urine|drug screen\w*|test\w*|study|studies)\b",
            re.I,
        ),
    ),
    (
        "physical medicine",
        re.compile(
            r"\b(?:physical therapy|PT|OT|occupational therapy|chiro\w*|acupuncture|"
            r"physiotherapy|massage|aquatic|manipulation|traction|work hardening|"
            r"functional restoration|TENS|e-?stim\w*|electrical stimulation)\b",
            re.I,
        ),
    ),
    (
        "durable medical equipment",
        re.compile(
            r"\b(?:brace|wheelchair|walker|cane|commode|chair|scooter|orthotic\w*|splint|"
            r"cushion|pillow|mattress|bed|unit|device|kit|pad|hearing aids?|DME|purchase|"
            r"rental)\b",
            re.I,
        ),
    ),
    (
        "pharmaceuticals",
        re.compile(
            r"\b(?:\d+(?:\.\d+)?\s?(?:mg|mcg|ml|g|grams|%)|#\s?\d+|tablets?|capsules?|"
            r"cream|gel|patch\w*|refills?|compound\w*|medication\w*)\b",
            re.I,
        ),
    ),
    (
        "evaluation and management",
        re.compile(
            r"\b(?:consult\w*|evaluation|referral|visit|follow[- ]up|office|clearance|"
            r"exam\w*)\b",
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
            r"\b(?:home health|home aide|nursing|facility|inpatient|hospitali[sz]ation|"
            r"rehabilitation unit|transportation)\b",
            re.I,
        ),
    ),
)

#: Every category :func:`request_category` can return.
CATEGORIES: tuple[str, ...] = (*(name for name, _ in _RULES), "other")


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
