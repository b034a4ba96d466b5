"""The forwarder registry and the config union name the same kinds."""

from __future__ import annotations

from typing import get_args

from gateway.forwarders import FORWARDERS, ForwarderConfigUnion


def test_registry_matches_config_union() -> None:
    """Every config kind has a forwarder and every forwarder a config kind."""
    union = get_args(ForwarderConfigUnion)[0]
    kinds = {get_args(model.model_fields["kind"].annotation)[0] for model in get_args(union)}
    assert kinds == set(FORWARDERS) == {"police_mqtt", "dc09", "webhook"}
