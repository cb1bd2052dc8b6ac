"""Frames around a payload: the schema-registry wire format, and bytes that cannot be text."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from worker.contract import InvalidNotification

MAGIC = 0  # Confluent's wire format: a zero byte, a 4-byte big-endian schema id, then the payload
_HEADER = struct.Struct(">bI")
_TEXT_CONTROLS = {9, 10, 13}  # tab, newline, carriage return start text; every other control byte does not


@dataclass(frozen=True, slots=True)
class Unframed:
    """The payload, and the schema id of the frame it came in (None: no frame)."""

    payload: bytes
    schema_id: int | None = None


def unframe(raw: bytes) -> Unframed:
    """Strip a schema-registry frame; a JSON payload goes on, any other is rejected with its schema id.

    Avro and Protobuf payloads need their schema to be read; the worker reads JSON only, so they are
    rejected (``unsupported_schema``), never read as text. Text that starts with a control byte is binary
    that is not framed: rejected (``binary_payload``) rather than classified as a body.
    """
    if raw[0] == MAGIC and len(raw) >= _HEADER.size:
        _, schema_id = _HEADER.unpack_from(raw)
        payload = raw[_HEADER.size:]
        if payload.lstrip()[:1] == b"{":
            return Unframed(payload, schema_id)
        raise InvalidNotification("unsupported_schema", f"schema-registry framed payload (schema id {schema_id}) "
                                  "is not JSON: Avro and Protobuf payloads are not read; send JSON Schema or JSON")
    if (raw[0] < 32 and raw[0] not in _TEXT_CONTROLS) or raw[0] == 127:
        raise InvalidNotification("binary_payload", f"the value starts with the control byte 0x{raw[0]:02x}: binary "
                                  "data is not a notification")
    return Unframed(raw)
