"""A factory of realistic dataset rows for tests (invented text, never real letters)."""

from __future__ import annotations

from typing import Any

from imr_outcome.data.schema import ItemRecord

_SUMMARIES = [
    "The injured worker is a {age} year old {sex} who sustained an industrial injury on "
    "03-14-2015 while lifting boxes. Diagnoses include lumbar strain and radiculopathy of the "
    "left leg. Treatment to date has included medications, six sessions of physical therapy and "
    "a home exercise program. Examination on {visit} showed tenderness of the lumbar paraspinal "
    "muscles, positive straight leg raise on the left and decreased sensation at L5. Pain was "
    "rated 7 out of 10. The treating physician requested {request}. Utilization review denied "
    "the request on {visit}, citing the MTUS guidelines.",
    "This {age} year old {sex} reports neck pain radiating to the right hand after a fall at work "
    "in 2014. Prior care included chiropractic treatment, acupuncture and nonsteroidal "
    "anti-inflammatory drugs with partial relief. On {visit} there was limited cervical range of "
    "motion, grip weakness and a positive Spurling test. Electrodiagnostic studies were not "
    "documented. The provider asked for {request} and the claims administrator's reviewer "
    "non-certified it on {visit}. An application for independent medical review followed.",
]


def make_record(
    n: int, *, group: int | None = None, label: int = 0, **overrides: Any
) -> ItemRecord:
    """Row ``n`` of group ``group`` (defaults to its own group), with invented text."""
    group_id = f"CM99-{group if group is not None else n:07d}"
    request = overrides.pop(
        "request", f"Physical therapy {n % 7 + 2} sessions for the lumbar spine"
    )
    fields: dict[str, Any] = {
        "id": f"{group_id}#{n}",
        "group_id": group_id,
        "source": "dwc",
        "source_file": f"{group_id}.pdf",
        "request": request,
        "summary": _SUMMARIES[n % 2].format(
            age=30 + n % 30,
            sex="female" if n % 2 else "male",
            visit=f"0{n % 9 + 1}/12/2016",
            request=request,
        )
        + f" Case detail {n}: {' '.join(f'w{n}x{k}' for k in range(30))}.",
        "label": label,
        "patient_age": 30 + n % 30,
        "patient_sex": "female" if n % 2 else "male",
        "event_date": f"2016-{n % 12 + 1:02d}-15",
        "report_year": 2016,
    }
    fields.update(overrides)
    return ItemRecord(**fields)
