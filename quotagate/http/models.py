"""Field types shared by the request models: the manifest's own, so the API and the manifest agree."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from quotagate.manifest.schema import Identifier, KeyId, ModelName, Slug

__all__ = ["Identifier", "KeyId", "Models", "Name", "Patch", "Ref", "Slug", "Strict", "Tag"]

Name = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=200)]
# An organization (id or slug), project, client or key id in a filter or reference.
Ref = Annotated[str, Field(min_length=1, max_length=300)]
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
