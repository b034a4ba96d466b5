"""Relaying another gateway's notices: every own shop of an alert told, each once."""

from __future__ import annotations

from protocols.mesh_message import MeshMessage, MeshNotice
from tests.unit.test_soft_state import configured, fresh_actions


def message(alert_id: str, *shops: str) -> MeshMessage:
    return MeshMessage(
        alert_id=alert_id,
        from_gateway="GW-002",
        notices=[MeshNotice(shop_id=s, notice={"event_id": "E1", "shop_id": s}) for s in shops],
    )


def test_an_alert_split_over_messages_reaches_every_shop_once(tmp_path):
    """The sender's notice cap sends the rest of an alert later, under the same alert id."""
    actions, _engine = fresh_actions(configured(tmp_path))
    assert actions.relay(message("A1", "S00001", "S00002")) == 2
    assert actions.relay(message("A1", "S00003")) == 1  # the capped remainder
    assert actions.relay(message("A1", "S00002", "S00003")) == 0  # a repeat tells no one twice
    assert actions.relay(message("A2", "S00001")) == 1  # another alert is news again
    assert actions.relayed == 4
