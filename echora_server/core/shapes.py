"""Response bodies as the OpenAPI document states them. Handlers still build plain dicts
(``*.shapes``); these models only describe them, and the contract fuzz test holds the two
together."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    """A JSON object the API answers with: every key listed, no other key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
