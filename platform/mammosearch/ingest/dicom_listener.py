"""A DICOM C-STORE receiver (Storage SCP): modalities and PACS push images to us.

Each received dataset is registered in its own transaction before the C-STORE is
answered, so Success (0x0000) means the image is stored and committed; a resend of the
same image is answered Success and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import Settings
from mammosearch.ingest.dicom_register import ImageRegisteredHook, register_dicom
from mammosearch.ingest.storage import ImageRejected

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000  # the dataset is not an image we can read
STATUS_OUT_OF_RESOURCES = 0xA700  # our side failed (database, disk): the sender may retry


def build_storage_ae(ae_title: str = "MAMMOSEARCH") -> AE:
    """An AE accepting every storage SOP class (incl. mammography, secondary capture) in
    every transfer syntax pydicom knows (incl. RLE, JPEG, JPEG 2000), plus C-ECHO."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # each of pynetdicom's contexts names one
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    return ae


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: at most 64 characters
    return status


def make_store_handler(
    session_factory: sessionmaker[Session],
    settings: Settings,
    on_registered: Sequence[ImageRegisteredHook] = (),
    source: str = "dicom-cstore",
) -> Callable[[Event], int | Dataset]:
    """The EVT_C_STORE handler: register the dataset, answer a DICOM status."""

    def handle_store(event: Event) -> int | Dataset:
        requestor = event.assoc.requestor
        request = cast(C_STORE, event.request)  # an EVT_C_STORE event carries a C-STORE
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "unknown")
        name = f"c-store from {requestor.ae_title}@{requestor.address}: {sop_instance_uid}"
        try:
            content = event.encoded_dataset()
            with session_factory() as session:
                result = register_dicom(session, content, name, settings, source=source)
                session.commit()
        except ImageRejected as exc:
            log.warning("rejected %s", exc)
            return _status(STATUS_CANNOT_UNDERSTAND, str(exc).removeprefix(f"{name}: "))
        except Exception as exc:  # our failure, not the sender's: say so, log the cause
            log.exception("could not register %s", name)
            return _status(STATUS_OUT_OF_RESOURCES, f"{type(exc).__name__}: {exc}")
        if result.created:
            for hook in on_registered:
                try:
                    hook(result.image_id)
                except Exception:  # the image is committed; the reconciler picks it up
                    log.exception("on_registered hook failed for image %d", result.image_id)
        return STATUS_SUCCESS

    return handle_store


def start_listener(
    session_factory: sessionmaker[Session],
    settings: Settings,
    port: int = 11112,
    ae_title: str = "MAMMOSEARCH",
    bind: str = "0.0.0.0",
    on_registered: Sequence[ImageRegisteredHook] = (),
    block: bool = False,
) -> ThreadedAssociationServer | None:
    """Serve C-STORE (and C-ECHO) on `bind:port`; block=False returns the server to
    `.shutdown()`, block=True serves until interrupted."""
    ae = build_storage_ae(ae_title)
    handlers: list[EventHandlerType] = [
        (evt.EVT_C_STORE, make_store_handler(session_factory, settings, on_registered))
    ]
    log.info("DICOM listener %s on %s:%d", ae_title, bind, port)
    return ae.start_server((bind, port), block=block, evt_handlers=handlers)
