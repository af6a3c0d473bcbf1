"""The one base of every settings schema (task specs, executor settings): an unknown key is an error and a
loaded setting never changes, so a typo in a file never passes silently or drifts mid-run. A schema that
must not coerce types at all says so where it is declared (`class X(StrictModel, strict=True)`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
