"""Shared pieces of the config models (STYLE S8)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SecretRef", "Section"]


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SecretRef(Section):
    """A secret (token, password) given by the name of an environment variable or a file path.

    Secrets never sit in the YAML file itself. Resolution happens once, at load time,
    so a missing variable or unreadable file stops the process with the key path.
    """

    env: str | None = Field(None, description="name of the environment variable holding the secret")
    file: Path | None = Field(None, description="path of a file holding the secret (first line, stripped)")
    value: str | None = Field(None, exclude=True, repr=False, description="resolved at load time; never in YAML")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_value(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError("secrets may come only from the environment or a file: use {env: NAME} or {file: PATH}")
        if isinstance(data, dict) and "value" in data:
            raise ValueError("secrets may come only from the environment or a file: use {env: NAME} or {file: PATH}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def resolve(self, environ: dict[str, str] | os._Environ[str]) -> SecretRef:
        """Return a copy holding the secret value; raise ValueError naming what is missing."""
        if self.env is not None:
            value = environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set or empty")
        else:
            assert self.file is not None
            try:
                value = self.file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ValueError(f"cannot read secret file {self.file}: {exc}") from exc
            if not value:
                raise ValueError(f"secret file {self.file} is empty")
        return self.model_copy(update={"value": value})

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"
