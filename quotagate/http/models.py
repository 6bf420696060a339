"""Field types shared by the request models: the manifest's own, so the API and the manifest agree."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from quotagate.manifest.schema import Identifier, KeyId, ModelName, Slug

__all__ = [
    "Identifier",
    "KeyId",
    "Models",
    "Name",
    "Note",
    "Patch",
    "PathRef",
    "Ref",
    "Slug",
    "Strict",
    "Tag",
    "Text",
    "When",
]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it as bad input instead of failing in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
Tag = Annotated[Text, Field(min_length=1, max_length=200)]
Note = Annotated[Text, Field(max_length=2000)]
# An organization (id or slug), project, client or key id in a filter or reference.
Ref = Annotated[Text, Field(min_length=1, max_length=300)]
PathRef = Annotated[Text, Path(min_length=1, max_length=300)]


def _storable(value: datetime) -> datetime:
    # Far-off years overflow on conversion to UTC or in the database; no real timestamp is that far.
    if not 1970 <= value.year <= 9000:
        raise ValueError("must be between the years 1970 and 9000")
    return value


When = Annotated[AwareDatetime, AfterValidator(_storable)]
Models = Annotated[list[ModelName], Field(min_length=1, max_length=1000)]


class Strict(BaseModel):
    """Request bodies: unknown fields are errors, as in the manifest (a typo must not drop a limit)."""

    model_config = ConfigDict(extra="forbid")


class Patch(Strict):
    """PATCH bodies: absent fields stay as they are; ``null`` clears only the fields listed in ``nullable``."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.field_name not in cls.nullable:
            raise ValueError("may not be null")
        return value
