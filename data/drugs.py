"""Drug names in requests: the drug classes of the MTUS chronic pain guidelines, and one
name for each drug whatever brand or generic the request uses.

The classes decide IMRs under the California MTUS / ACOEM and ODG guidelines (8 CCR
9792.20 et seq.): some are recommended only short-term or not at all. A drug is counted
under its generic name (Norco and hydrocodone, Ultram and tramadol, Flexeril and
cyclobenzaprine are the same drug to a reviewer applying the guideline), so past decisions
on one drug are counted together whichever name the application used.
"""

from __future__ import annotations

import re

#: Drug classes, each a regular expression over brand and generic names (case-insensitive).
DRUG_CLASSES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.I)
    for name, pattern in {
        "opioid": r"\b(?:norco|hydrocodone|oxycodone|oxycontin|percocet|tramadol|ultram|"
        r"morphine|ms contin|tapentadol|nucynta|methadone|fentanyl|duragesic|codeine|"
        r"buprenorphine|butrans|hydromorphone|dilaudid|oxymorphone|opana|vicodin)\b",
        "muscle_relaxant": r"\b(?:cyclobenzaprine|flexeril|fexmid|tizanidine|zanaflex|"
        r"baclofen|carisoprodol|soma|methocarbamol|robaxin|orphenadrine|norflex|"
        r"metaxalone|skelaxin)\b",
        "nsaid": r"\b(?:ibuprofen|motrin|naproxen|anaprox|naprosyn|meloxicam|mobic|"
        r"diclofenac|voltaren|celecoxib|celebrex|etodolac|nabumetone|ketoprofen|"
        r"indomethacin|nsaids?)\b",
        "topical": r"\b(?:lidoderm|lidocaine (?:\d+%? ?)?(?:patch|patches|cream|ointment)|"
        r"patch(?:es)?|compound\w*|topical|cream|gel|ointment|terocin|flurbiprofen)\b",
        "anticonvulsant": r"\b(?:gabapentin|neurontin|pregabalin|lyrica|topiramate|"
        r"topamax)\b",
        "antidepressant": r"\b(?:amitriptyline|nortriptyline|duloxetine|cymbalta|"
        r"trazodone|sertraline|zoloft|fluoxetine|prozac|venlafaxine|effexor|bupropion)\b",
        "ppi": r"\b(?:omeprazole|prilosec|pantoprazole|protonix|esomeprazole|nexium|"
        r"lansoprazole|ranitidine)\b",
        "sleep_or_benzodiazepine": r"\b(?:zolpidem|ambien|eszopiclone|lunesta|"
        r"alprazolam|xanax|diazepam|valium|clonazepam|klonopin|lorazepam|ativan|"
        r"temazepam)\b",
        "antiemetic": r"\b(?:ondansetron|zofran|promethazine|phenergan|"
        r"metoclopramide)\b",
        "laxative": r"\b(?:colace|docusate|senna|senokot|miralax|lactulose)\b",
    }.items()
}

#: Brand name -> generic name (lower case), for the brands of :data:`DRUG_CLASSES`
#: (FDA Orange Book). Combination products go by their principal ingredient: Norco,
#: Vicodin (hydrocodone/acetaminophen) -> hydrocodone; Percocet (oxycodone/acetaminophen)
#: -> oxycodone.
GENERIC_NAMES: dict[str, str] = {
    "norco": "hydrocodone",
    "vicodin": "hydrocodone",
    "percocet": "oxycodone",
    "oxycontin": "oxycodone",
    "ultram": "tramadol",
    "ms contin": "morphine",
    "nucynta": "tapentadol",
    "duragesic": "fentanyl",
    "butrans": "buprenorphine",
    "dilaudid": "hydromorphone",
    "opana": "oxymorphone",
    "flexeril": "cyclobenzaprine",
    "fexmid": "cyclobenzaprine",
    "zanaflex": "tizanidine",
    "soma": "carisoprodol",
    "robaxin": "methocarbamol",
    "norflex": "orphenadrine",
    "skelaxin": "metaxalone",
    "motrin": "ibuprofen",
    "anaprox": "naproxen",
    "naprosyn": "naproxen",
    "mobic": "meloxicam",
    "voltaren": "diclofenac",
    "celebrex": "celecoxib",
    "lidoderm": "lidocaine",
    "neurontin": "gabapentin",
    "lyrica": "pregabalin",
    "topamax": "topiramate",
    "cymbalta": "duloxetine",
    "zoloft": "sertraline",
    "prozac": "fluoxetine",
    "effexor": "venlafaxine",
    "prilosec": "omeprazole",
    "protonix": "pantoprazole",
    "nexium": "esomeprazole",
    "ambien": "zolpidem",
    "lunesta": "eszopiclone",
    "xanax": "alprazolam",
    "valium": "diazepam",
    "klonopin": "clonazepam",
    "ativan": "lorazepam",
    "zofran": "ondansetron",
    "phenergan": "promethazine",
    "colace": "docusate",
    "senokot": "senna",
}

#: Any drug name of :data:`DRUG_CLASSES` other than the class words (patch, cream,
#: compound, ...), as one pattern.
DRUG_NAME: re.Pattern[str] = re.compile(
    "|".join(f"(?:{pattern.pattern})" for pattern in DRUG_CLASSES.values()), re.I
)

#: Drug classes the California MTUS chronic pain medical treatment guidelines (8 CCR
#: 9792.24.2) recommend only short-term, second-line or not at all: opioids (only with
#: documented pain relief and functional improvement), muscle relaxants (short-term, for
#: acute exacerbations), topical compounds and lidocaine patches (after first-line
#: failure, for neuropathic pain), hypnotics and benzodiazepines (short-term), anti-emetics
#: for opioid nausea, proton-pump inhibitors (only with gastrointestinal risk). Fixed from
#: the guideline before it was measured on the letters, never fitted.
MTUS_RESTRICTED: tuple[str, ...] = (
    "opioid",
    "muscle_relaxant",
    "topical",
    "sleep_or_benzodiazepine",
    "antiemetic",
    "ppi",
)


def mtus_restricted_drug(request: str) -> re.Match[str] | None:
    """The first drug name in ``request`` of an :data:`MTUS_RESTRICTED` class, if any.

    Args:
        request: one disputed item as written in the application (any case).

    Returns:
        The leftmost match over every restricted class (its ``span()`` is a character
        range of ``request``), or None when the request names no such drug.
    """
    found = (DRUG_CLASSES[name].search(request) for name in MTUS_RESTRICTED)
    matches = [match for match in found if match is not None]
    return min(matches, key=lambda match: match.start()) if matches else None
