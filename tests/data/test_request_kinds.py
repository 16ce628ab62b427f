"""The request's kind (category and item): what the outcome rates count and the similar
decisions rank first, read from the request as an application words it."""

from __future__ import annotations

import pytest

from imr_outcome.data.categories import CATEGORIES, request_category
from imr_outcome.data.drugs import DRUG_CLASSES, MTUS_RESTRICTED, mtus_restricted_drug
from imr_outcome.data.request_features import request_features
from imr_outcome.data.request_terms import request_item


@pytest.mark.parametrize(
    ("request_text", "item"),
    [
        ("Norco 10/325mg #120", "Hydrocodone"),
        ("Hydrocodone/APAP 7.5/325mg #60", "Hydrocodone"),
        ("Ultram ER 150mg #30", "Tramadol"),
        ("Tramadol 50mg #90", "Tramadol"),
        ("Flexeril 7.5mg #30", "Cyclobenzaprine"),
        ("Lidoderm 5% patches #30", "Lidocaine"),
        ("Lidocaine 5% patches #30", "Lidocaine"),
        ("MRI of the lumbar spine without contrast", "lumbar MRI"),
        ("Acupuncture 2 x 4 for the cervical spine", "acupuncture"),
        ("EMG/NCV of the bilateral upper extremities", "EMG/NCV"),
        ("Lumbar epidural steroid injection at L4-5", "epidural steroid injection"),
        ("Physical therapy 12 sessions for the left shoulder", "physical therapy"),
        ("PT/OT 12 sessions for the right wrist", "physical therapy"),
        ("Chirophysio therapy 2 times a week for the low back", "chiropractic"),
        ("Pre-operative labs: PT/PTT", "lab tests"),
        ("Associated surgical service: Labs - CBC", "lab tests"),
        ("Pre-op urinalysis", "lab tests"),
        ("Urine drug screen, quarterly", "urine drug screen"),
        ("Pre-operative EKG", "EKG"),
        ("Pulsed ultrasound 2 times a week for 3 weeks", "therapeutic ultrasound"),
        ("Ultrasound of the right shoulder", "shoulder ultrasound"),
        ("Electrical muscle stimulation 2 times a week", "electrical stimulation"),
        ("Trigger point injections to the trapezius", "trigger point injection"),
        ("Trigger points impedance imaging", None),
        ("Home exercise kit", None),
    ],
)
def test_request_item_names_the_requested_thing(request_text: str, item: str | None) -> None:
    assert request_item(request_text) == item


@pytest.mark.parametrize(
    ("request_text", "category"),
    [
        ("Right knee arthroscopy with partial meniscectomy", "surgery"),
        ("Neuroplasty of the ulnar nerve", "surgery"),
        ("Assistant surgeon", "surgery"),
        ("Associated surgical service: Medical clearance", "surgery"),
        ("Consultation with a spine surgeon", "evaluation and management"),
        ("Orthopedic surgery evaluation for the right knee", "evaluation and management"),
        ("Follow-up office visit", "evaluation and management"),
        ("Medication management consultation", "evaluation and management"),
        ("Myofascial release to the neck 2 times a week", "physical medicine"),
        ("Pulsed ultrasound 2 times a week for 3 weeks", "physical medicine"),
        ("Infrared therapy six sessions", "physical medicine"),
        ("Electrical muscle stimulation 2 times a week", "physical medicine"),
        ("Extracorporeal shockwave therapy, 3 sessions", "physical medicine"),
        ("Ultrasound of the right shoulder", "imaging and diagnostics"),
        ("Pre-operative CBC", "imaging and diagnostics"),
        ("Pre-operative PT/PTT", "imaging and diagnostics"),
        ("Electrocardiogram", "imaging and diagnostics"),
        ("Comprehensive psychological testing", "behavioral health"),
        ("Cyclobenzaprine", "pharmaceuticals"),
        ("Post-op Zofran", "pharmaceuticals"),
        ("Fioricet #60", "pharmaceuticals"),
        ("Lidocaine ointment 5%", "pharmaceuticals"),
        ("Lumbar support", "durable medical equipment"),
        ("Wrist braces #2", "durable medical equipment"),
        ("Hot/cold therapy wrap", "durable medical equipment"),
        ("Two week stay in an acute rehabilitation unit", "home and facility care"),
        ("Daily RN visits for wound care and medication management", "home and facility care"),
        ("Transportation to medical appointments", "home and facility care"),
        ("Deprizine (unknown quantity)", "other"),
    ],
)
def test_request_category_follows_the_dwc_service_groups(request_text: str, category: str) -> None:
    assert request_category(request_text) == category


def test_every_category_is_listed_once() -> None:
    assert len(CATEGORIES) == len(set(CATEGORIES))
    assert CATEGORIES[-1] == "other"


def test_a_surgical_consult_is_not_the_surgery_in_the_request_features() -> None:
    consult = request_features("Consultation with a spine surgeon", ["Lumbar fusion L4-5"])
    surgery = request_features("Lumbar fusion L4-5", ["Consultation with a spine surgeon"])
    assert consult["category=evaluation and management"] == 1.0
    assert (consult["surgery"], consult["letter_has_surgery"]) == (0.0, 1.0)
    assert surgery["surgery"] == 1.0


@pytest.mark.parametrize(
    ("request_text", "drug"),
    [
        ("Norco 10/325mg #60", "Norco"),
        ("Retrospective request for Flexeril 7.5mg #30 (DOS 3/2/16)", "Flexeril"),
        ("Lidoderm 5% patches #30", "Lidoderm"),
        ("Zofran 8mg #20 for post-operative nausea", "Zofran"),
        ("Gabapentin 600mg #90 and Prilosec 20mg #60", "Prilosec"),
        ("Ambien 10mg #30, then tramadol 50mg", "Ambien"),  # the leftmost of two classes
    ],
)
def test_mtus_restricted_drug_finds_the_leftmost_restricted_drug(
    request_text: str, drug: str
) -> None:
    match = mtus_restricted_drug(request_text)

    assert match is not None
    assert match.group() == drug
    assert request_text[match.start() : match.end()] == drug


@pytest.mark.parametrize(
    "request_text",
    [
        "MRI of the right shoulder without contrast",
        "Gabapentin 600mg #90",  # an anticonvulsant: first-line for neuropathic pain
        "Naproxen 550mg #60",
        "Right L4-5 laminectomy and associated surgical service: post-op physical therapy",
        "",
    ],
)
def test_requests_without_a_restricted_drug_have_no_match(request_text: str) -> None:
    assert mtus_restricted_drug(request_text) is None


def test_every_restricted_class_is_a_drug_class() -> None:
    assert set(MTUS_RESTRICTED) <= set(DRUG_CLASSES)
