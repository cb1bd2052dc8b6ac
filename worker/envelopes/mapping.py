"""A user's own envelope: NOTIF_INPUT_FIELDS maps notification fields to JSON Pointers (RFC 6901) into the object.

For example ``{"title": "/payload/subject", "body": "/payload/text", "app": "/meta/source"}``. The pointers
are parsed once, at start-up, by the `jsonpointer` library; one that does not parse stops start-up with an
error naming its field.

Exceptions:
    FieldMappingError    the mapping is not a JSON object of known fields to valid JSON Pointers
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonpointer import JsonPointer, JsonPointerException

from worker.envelopes.shapes import FIELDS, Fields

_MISSING = object()


class FieldMappingError(ValueError):
    """NOTIF_INPUT_FIELDS cannot be used; the message names the field."""


class FieldMapping:
    """Field -> JSON Pointer, resolved against each object; missing paths give no value."""

    def __init__(self, pointers: Mapping[str, str]) -> None:
        self.pointers: dict[str, JsonPointer] = {}
        for field, path in pointers.items():
            if field not in FIELDS:
                raise FieldMappingError(f"NOTIF_INPUT_FIELDS: unknown field {field!r}; fields: {', '.join(FIELDS)}")
            if not isinstance(path, str):
                raise FieldMappingError(f"NOTIF_INPUT_FIELDS: the path of {field!r} must be a JSON Pointer string")
            try:
                self.pointers[field] = JsonPointer(path)
            except JsonPointerException as exc:
                raise FieldMappingError(f"NOTIF_INPUT_FIELDS: the path of {field!r} is not a JSON Pointer "
                                        f"({path!r}: {exc})") from exc
        if not {"title", "body"} & self.pointers.keys():
            raise FieldMappingError("NOTIF_INPUT_FIELDS must map title or body")

    @classmethod
    def parse(cls, text: str | None) -> FieldMapping | None:
        """The mapping of a NOTIF_INPUT_FIELDS value (a JSON object); None when it is empty."""
        if not text or not text.strip():
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise FieldMappingError(f"NOTIF_INPUT_FIELDS is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise FieldMappingError("NOTIF_INPUT_FIELDS must be a JSON object of field -> JSON Pointer")
        return cls(value)

    def fields(self, obj: Any) -> Fields | None:
        """The mapped fields of ``obj``; None when neither title nor body is there (another shape may fit)."""
        found: Fields = {}
        for field, pointer in self.pointers.items():
            value = pointer.resolve(obj, _MISSING)
            if value is not _MISSING:
                found[field] = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        return found if found.get("title") or found.get("body") else None
