"""Tests for imr_outcome.data.reasoning_cues: the cue list on invented sentences.

Each sentence is invented in the style of a DMHC ``Findings`` text. Background facts must
have no cue; every kind of reviewer reasoning must have the cue named.
"""

from __future__ import annotations

import pytest

from imr_outcome.data.reasoning_cues import CUES, find_cues, is_about_patient, states_position

#: Background: facts about this patient, what records show, the parties' positions.
CLEAN = [
    "The records indicate that this patient presents with a history of chronic pelvic pain.",
    "In addition, the patient reports heavy bleeding with a normal endometrial biopsy.",
    "She was admitted on 03/14/24 with weakness of both legs.",
    "The patient completed twelve sessions of physical therapy in 2022.",
    "Her diagnoses include type 2 diabetes mellitus and hypertension.",
    "He requires moderate assistance with transfers and uses a walker.",
    "The patient's MRI showed a full-thickness tear of the supraspinatus tendon.",
    "Notes report that the patient's pain is 8/10 despite ibuprofen.",
    "The health plan denied the request as not medically necessary.",
    "Her physician believes the surgery should be done now.",
    "The enrollee's treating oncologist states that proton therapy would spare the rectum.",
    "The patient was born at term after an uncomplicated pregnancy.",
]

#: Reasoning, one sentence per cue (kind, name).
REASONING = [
    ("section", "final result", "Final Result: The reviewer determined that it is needed."),
    ("section", "credentials", "Credentials/Qualifications: The reviewer is an internist."),
    ("section", "board certified", "The reviewer is board-certified in pediatrics."),
    ("section", "actively practicing", "The reviewer is actively practicing."),
    ("section", "reviewer finding", "The physician reviewer found that surgery is indicated."),
    ("section", "reviewer count", "Two of the three physician reviewers agreed."),
    ("section", "reviewer count", "Reviewer #2 agreed."),
    ("section", "reviewer", "The reviewer notes a prior fusion at C5-C6."),
    ("section", "decision word", "The denial is overturned."),
    ("section", "health plan's denial should", "Thus the Health Plan's denial should stand."),
    ("connective", "therefore", "Therefore, the MRI is needed."),
    ("connective", "therefore", "All told, the MRI is needed."),
    ("connective", "however", "However, the patient has not tried metformin."),
    ("connective", "although", "Although some data support home birth, risk remains."),
    ("connective", "although", "While the patient appears to be low-risk, she declined tests."),
    ("connective", "overall / given", "Given these findings, the device is not needed."),
    ("connective", "overall / given", "If the problem is bleeding, an IUD is an option."),
    ("connective", "based on", "Based on the available documentation, surgery is premature."),
    ("connective", "consistent with", "Her growth is consistent with a familial pattern."),
    (
        "connective",
        "consistent with",
        "His stature is inconsistent with growth hormone deficiency.",
    ),
    ("connective", "lack of", "There is a lack of indication for these procedures."),
    ("connective", "lack of", "The records show an absence of conservative care."),
    (
        "connective",
        "in this case, ... not",
        "In this case, the patient's conditions did not need a physician daily.",
    ),
    ("judgement", "medical necessity", "The requested CT scan is medically necessary."),
    ("judgement", "indicated / appropriate", "A hysterectomy is not indicated for her."),
    ("judgement", "benefit / likelihood", "The patient is unlikely to improve with surgery."),
    ("judgement", "benefit / likelihood", "This patient would benefit from the pump."),
    ("judgement", "would / should", "The patient should be treated with an anti-TNF agent."),
    ("judgement", "criteria met", "This patient meets the criteria for bariatric surgery."),
    ("judgement", "does not require", "She does not require skilled nursing services."),
    ("judgement", "does not require", "The patient's records do not include a blood count."),
    ("judgement", "missing documentation", "The patient has no documented trial of metformin."),
    (
        "judgement",
        "missing documentation",
        "The provider requested the device without an assessment of the patient's response.",
    ),
    ("judgement", "supports / rationale", "The records support the use of Ozempic for her."),
    ("literature", "guideline / criteria", "Current guidelines recommend a trial of metformin."),
    ("literature", "guideline / criteria", "Per ASAM criteria, the patient needs level 3.5 care."),
    ("literature", "literature", "Researchers explain that shoulder pain is common."),
    ("literature", "literature", "A study showed a 14.9% weight loss over 68 weeks."),
    ("literature", "literature", "A meta-analysis showed fewer fractures."),
    ("literature", "approved / indicated for", "The FDA has approved tofacitinib for colitis."),
    ("judgement", "candidate", "The patient is a good candidate for a knee replacement."),
    ("literature", "shown / line of therapy", "Metformin is the first-line therapy for diabetes."),
    ("literature", "shown / line of therapy", "Proton therapy has been shown to spare tissue."),
    ("literature", "shown / line of therapy", "This use is supported by two trials."),
    ("literature", "quotation", 'Experts noted, "Imaging is rarely needed."'),
]


@pytest.mark.parametrize("sentence", CLEAN)
def test_background_sentences_have_no_cue(sentence: str) -> None:
    assert find_cues(sentence) == []
    assert is_about_patient(sentence)


@pytest.mark.parametrize(("kind", "name", "sentence"), REASONING)
def test_each_reasoning_sentence_has_its_cue(kind: str, name: str, sentence: str) -> None:
    hits = find_cues(sentence)
    assert (kind, name) in {(h.kind, h.name) for h in hits}, hits
    for hit in hits:
        assert 0 <= hit.start < hit.end <= len(sentence)


def test_every_cue_is_exercised_and_named_once() -> None:
    names = [cue.name for cue in CUES]
    assert len(names) == len(set(names))
    assert {name for _, name, _ in REASONING} == set(names)


def test_party_positions_may_hold_judgement_and_literature_words_but_not_connectives() -> None:
    plan = "The health plan denied the request as not medically necessary."
    assert states_position(plan)
    assert find_cues("The request is not medically necessary.") != []
    assert find_cues(plan) == []
    assert [h.name for h in find_cues("Therefore, the health plan denied the request.")] == [
        "therefore"
    ]
    request = "The enrollee has requested a sleep study under her pharmacy benefit."
    assert find_cues(request) != []  # "benefit" is a judgement word ...
    assert find_cues(request, position=True) == []  # ... allowed in the request sentence


def test_general_statements_are_not_about_the_patient() -> None:
    assert not is_about_patient("Patients with obesity benefit from weight-loss medication.")
    assert not is_about_patient("Skilled nursing services may include wound care.")
    assert is_about_patient("In this case, a trial of physical therapy was completed.")
