"""Get-or-create a patient of a source, once for every importer (sheet, watch folder, DICOM).

Safe against a concurrent importer: the insert runs in a savepoint, and a unique-key clash
means the other one created the row first, which is then read back.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammosearch.db.models import Patient


def get_or_create_patient(
    session: Session,
    source: str,
    source_patient_id: str,
    age: int | None = None,
    savepoint: bool = True,
) -> tuple[Patient, bool]:
    """The patient `source_patient_id` of `source`; (patient, created). A new one gets `age`.

    `savepoint=False`: the insert is part of the caller's transaction, for a batch that
    rolls back as a whole (with pysqlite, releasing a first savepoint commits it).
    """
    query = select(Patient).where(
        Patient.source == source, Patient.source_patient_id == source_patient_id
    )
    patient = session.scalar(query)
    if patient is not None:
        return patient, False
    patient = Patient(source=source, source_patient_id=source_patient_id, age=age)
    if not savepoint:
        session.add(patient)
        return patient, True
    try:
        with session.begin_nested():
            session.add(patient)
    except IntegrityError:  # created meanwhile by another importer
        return session.scalars(query).one(), False
    return patient, True
