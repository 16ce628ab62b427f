"""What was requested, in terms a guideline prior can use: request structure features.

A case summary is shared by every item of a letter, so only the request can tell a
letter's items apart (issue 22: half the Overturned items sit in letters with mixed
outcomes). Words alone teach this poorly on a few hundred items, so the request is
described by the classes that decide IMRs under the California MTUS / ACOEM and ODG
guidelines (8 CCR 9792.20 et seq.):

* the request category (:func:`~imr_outcome.data.categories.request_category`);
* the drug class of a medication request (opioids, muscle relaxants, NSAIDs, topical
  compounds and lidocaine patches, anticonvulsants, antidepressants, proton-pump
  inhibitors, sleep aids and benzodiazepines, anti-emetics, laxatives): the MTUS chronic
  pain guidelines recommend some classes only short-term or not at all;
* its relation to surgery: the surgery itself, an evaluation or consult, a pre-operative
  test or clearance, an "associated surgical service" (post-operative therapy, cold
  therapy, slings, an assistant), a post-operative medication;
* whether the request is retrospective, and whether the letter also requests a surgery
  (the other requests of one IMR application are known at filing).

Every feature is read from the request text (and the sibling requests of the same
letter), never from the decision, its rationale or the reviewer: the request exists
before filing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from imr_outcome.data.categories import request_category
from imr_outcome.data.drugs import DRUG_CLASSES

_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.I)
    for name, pattern in {
        "pre_op": r"\bpre-?\s?op(?:erative)?\b|\bmedical clearance\b|\bclearance\b",
        "post_op": r"\bpost-?\s?op(?:erative)?\b",
        "associated_service": r"\bassociated surgical service\b|\bassistant (?:surgeon|pa)\b"
        r"|\bassistant\b",
        "evaluation": r"\b(?:consult\w*|evaluation|referral|second opinion|office visit|"
        r"follow-?up visit)\b",
        "retrospective": r"\bretro(?:spective|active)?\b|\bDOS\b",
        "durable_equipment": r"\b(?:cold therapy|sling|brace|cane|walker|wheelchair|"
        r"tens unit|cpm|continuous passive motion|cryotherapy|game ready|pillow)\b",
    }.items()
}

#: The names :func:`request_features` returns, in order (besides ``category=<name>``).
FEATURE_NAMES: tuple[str, ...] = (
    *(f"drug={name}" for name in DRUG_CLASSES),
    *_PATTERNS,
    "surgery",
    "letter_has_surgery",
    "ancillary_to_surgery",
)


def request_features(request: str, siblings: Sequence[str] = ()) -> dict[str, float]:
    """Binary structure features of one request.

    Args:
        request: the disputed item as written in the application.
        siblings: the other requests of the same letter or application (may be empty;
            the request itself may be among them).

    Returns:
        ``{"category=<request category>": 1.0, <name in FEATURE_NAMES>: 0.0 or 1.0, ...}``.
        ``ancillary_to_surgery`` is 1 for a pre-operative, post-operative or associated
        service of a letter that also requests a surgery.
    """
    category = request_category(request)
    features = {f"category={category}": 1.0}
    for name, pattern in DRUG_CLASSES.items():
        features[f"drug={name}"] = float(bool(pattern.search(request)))
    for name, pattern in _PATTERNS.items():
        features[name] = float(bool(pattern.search(request)))
    ancillary = bool(features["pre_op"] or features["post_op"] or features["associated_service"])
    surgery = category == "surgery" and not ancillary and not features["evaluation"]
    features["surgery"] = float(surgery)
    letter_surgery = surgery or any(
        request_category(other) == "surgery"
        and not any(_PATTERNS[key].search(other) for key in ("pre_op", "post_op", "evaluation"))
        for other in siblings
        if other != request
    )
    features["letter_has_surgery"] = float(letter_surgery)
    features["ancillary_to_surgery"] = float(ancillary and letter_surgery)
    return features


def letter_request_features(
    requests: Sequence[str], groups: Sequence[str]
) -> list[dict[str, float]]:
    """:func:`request_features` of each item, with the other requests of its group as
    siblings.

    Args:
        requests: n requests.
        groups: the letter (group id) of each request, length n.

    Returns:
        n feature dicts, in input order.
    """
    by_group: dict[str, list[str]] = {}
    for request, group in zip(requests, groups, strict=True):
        by_group.setdefault(group, []).append(request)
    return [
        request_features(request, by_group[group])
        for request, group in zip(requests, groups, strict=True)
    ]
