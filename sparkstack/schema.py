"""The base every input model shares: the profiles' schema and the group settings' schema both build on it.

Its own module so that `profiles` (which needs `cluster`) and `groups` (which `cluster` reads) never import each
other: profiles -> cluster -> groups -> schema, with no way back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, values are never coerced (a quoted "0.5" is not a float), and nothing mutates."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def error_text(err: dict) -> str:
    """A validation error's message as the user should read it: a check of ours says its own words, without
    pydantic's "Value error, " in front."""
    if err.get("type") == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])
    return err["msg"]
