"""The forwarder registry and the config union name the same kinds."""

from __future__ import annotations

from typing import get_args

from gateway.config import kinds
from gateway.forwarders import FORWARDERS, forwarder_class


def test_registry_matches_config_union() -> None:
    """Every config kind has a forwarder of that kind and every forwarder a config kind."""
    union = get_args(kinds.forwarder_settings())[0]
    named = {get_args(model.model_fields["kind"].annotation)[0] for model in get_args(union)}
    assert named == set(FORWARDERS) == {"police_mqtt", "dc09", "webhook"}
    assert {kind: forwarder_class(kind).kind for kind in FORWARDERS} == {k: k for k in FORWARDERS}  # type: ignore[attr-defined]
