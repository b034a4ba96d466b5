"""The message that carries neighbour notices to another gateway through the police broker."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MeshNotice(BaseModel):
    """One shop's notice, as its own gateway would have published it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_id: str = Field(max_length=40, description="Shop to alert.")
    notice: dict[str, Any] = Field(description="The notice payload for the shop's devices.")


class MeshMessage(BaseModel):
    """One alert's notices for one gateway's shops (``police/v1/{large}/mesh/{gw}/notify``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str = Field(max_length=64, description="The alert; a gateway relays it once.")
    from_gateway: str = Field(
        max_length=40, description="Gateway that raised it; never relayed back."
    )
    notices: list[MeshNotice] = Field(max_length=200, description="Notices, one per shop.")
