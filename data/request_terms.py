"""The requested item in a few normalised words ("Norco", "lumbar MRI", "acupuncture").

Finer than the request category (:mod:`imr_outcome.data.categories`), coarse enough that
past decisions on the same item can be counted: a drug by the name the request uses
counted under its generic name whatever brand the request uses ("Norco" and "hydrocodone"
are both "Hydrocodone"; :data:`~imr_outcome.data.drugs.GENERIC_NAMES`), an imaging or
electrodiagnostic study by its body region, a pre-operative lab or an EKG as such, and a
therapy, injection, procedure or device by its usual name. Rules are ordered; the first
that matches wins; a request none matches has no item (only its category is counted).
Read from the request only, which exists before filing.
"""

from __future__ import annotations

import re

from imr_outcome.data.drugs import DRUG_NAME, GENERIC_NAMES

_REGIONS: tuple[tuple[str, str], ...] = (
    ("lumbar", r"lumbar|lumbosacral|low back|l-?spine|l[1-5]"),
    ("cervical", r"cervical|neck|c-?spine|c[2-7]"),
    ("thoracic", r"thoracic|t-?spine"),
    ("shoulder", r"shoulders?"),
    ("knee", r"knees?"),
    ("hip", r"hips?"),
    ("wrist/hand", r"wrists?|hands?|fingers?|thumbs?"),
    ("elbow", r"elbows?"),
    ("ankle/foot", r"ankles?|feet|foot"),
    ("brain", r"brain|head"),
)
_STUDIES: tuple[tuple[str, str], ...] = (
    ("MRI", r"mri|magnetic resonance"),
    ("CT", r"ct|cat scan|computed tomography"),
    ("x-ray", r"x-?rays?|radiographs?"),
    ("EMG/NCV", r"emg|ncv|ncs|nerve conduction|electromyograph\w*"),
    ("ultrasound", r"ultrasound|sonogra\w*"),
)
#: Items matched before the studies: ultrasound given in sessions is a physical-therapy
#: modality, not imaging.
_BEFORE_STUDIES: tuple[tuple[str, str], ...] = (
    ("therapeutic ultrasound", r"(?:pulsed|therapeutic) ultrasound|ultrasound \d+ ?(?:times|x)\b"),
)
#: (item, pattern) for therapies, injections, procedures and devices, in match order.
_ITEMS: tuple[tuple[str, str], ...] = (
    ("EKG", r"ekg\b|ecg\b|electrocardiogram"),
    (
        "lab tests",
        r"labs?\b|pt/ptt|ptt\b|pt/inr|cbc\b|cmp\b|bmp\b|chem\w* panel|metabolic panel|"
        r"urinalysis|ua\b",
    ),
    ("epidural steroid injection", r"epidural|\besi\b|transforaminal"),
    ("facet joint injection", r"facet|medial branch"),
    ("radiofrequency ablation", r"radiofrequency|rhizotomy|\brfa\b"),
    ("trigger point injection", r"trigger points?\b(?! impedance)"),
    ("platelet-rich plasma injection", r"platelet|\bprp\b"),
    ("Synvisc / hyaluronic acid injection", r"synvisc|hyalur\w*|orthovisc|euflexxa"),
    ("cortisone injection", r"cortisone|steroid injection|corticosteroid injection"),
    ("spinal fusion", r"fusion"),
    ("arthroscopy", r"arthroscop\w*"),
    ("acupuncture", r"acupuncture"),
    ("chiropractic", r"chiro\w*|manipulation"),
    ("aquatic therapy", r"aqua\w* therapy|pool therapy"),
    ("physical therapy", r"physical therapy|\bpt\b(?!/ptt|/inr)|physiotherapy"),
    ("occupational therapy", r"occupational therapy|\bot\b"),
    ("massage therapy", r"massage"),
    ("functional restoration program", r"functional restoration|\bfrp\b"),
    ("work hardening", r"work hardening|work conditioning"),
    ("cognitive behavioral therapy", r"cognitive behavio\w*|\bcbt\b|psychotherapy"),
    ("psychological evaluation", r"psycholog\w* (?:evaluation|consult\w*|testing)"),
    ("TENS unit", r"\btens\b|transcutaneous"),
    ("H-wave unit", r"h-?wave"),
    ("interferential unit", r"interferential"),
    ("electrical stimulation", r"electrical (?:muscle )?stimulation|e-?stim\b|ems\b"),
    ("cold therapy unit", r"cold therapy|cryotherapy|game ready|vascutherm"),
    ("home health care", r"home health|home care|home aide"),
    ("gym membership", r"gym"),
    ("urine drug screen", r"urine drug|drug screen\w*|urine tox\w*"),
    ("orthopedic consultation", r"ortho\w* (?:consult\w*|evaluation|referral)"),
    ("pain management consultation", r"pain management (?:consult\w*|evaluation|referral)"),
)

_REGION = [(name, re.compile(rf"\b(?:{p})\b", re.I)) for name, p in _REGIONS]
_STUDY = [(name, re.compile(rf"\b(?:{p})\b", re.I)) for name, p in _STUDIES]
_ITEM = [(name, re.compile(rf"\b(?:{p})", re.I)) for name, p in _ITEMS]
_BEFORE = [(name, re.compile(rf"\b(?:{p})", re.I)) for name, p in _BEFORE_STUDIES]
#: Drug-class words that are not a drug's name.
_GENERIC_DRUG_WORDS = frozenset(
    {"patch", "patches", "compound", "compounded", "topical", "cream", "gel", "ointment", "nsaid"}
)


def _drug_name(request: str) -> str | None:
    for m in DRUG_NAME.finditer(request):
        word = m.group(0).lower()
        if word in _GENERIC_DRUG_WORDS or word.startswith("compound"):
            continue
        if word.startswith("lidocaine"):
            word = "lidocaine"
        return GENERIC_NAMES.get(word, word).title()
    return None


def request_item(request: str) -> str | None:
    """The normalised requested item of a request, or None.

    Args:
        request: the disputed request as written, e.g. ``"MRI of the lumbar spine"``.

    Returns:
        A generic drug name (``"Hydrocodone"`` for Norco, ``"Gabapentin"``,
        ``"Lidocaine"``), a study with its
        region (``"lumbar MRI"``, ``"cervical EMG/NCV"``, or the study alone when no
        region is named), one of the therapy / injection / procedure / device names of
        this module (``"acupuncture"``, ``"epidural steroid injection"``), or None when no
        rule matches.
    """
    for name, pattern in _BEFORE:
        if pattern.search(request):
            return name
    for name, pattern in _STUDY:
        if pattern.search(request):
            region = next((r for r, rp in _REGION if rp.search(request)), None)
            return f"{region} {name}" if region else name
    for name, pattern in _ITEM:
        if pattern.search(request):
            return name
    return _drug_name(request)
