"""The rule engine of a gateway config, as the daemon and ``lianfang rules test`` both build it."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rules.arming import ArmSchedule, OpeningHours
from rules.engine import RuleEngine, ShopFacts, effective_rules
from rules.models import Level

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig, ShopPlace


def local_zone(config: GatewayConfig) -> tzinfo:
    """The time zone of opening hours: ``rules.timezone``, else the system's."""
    if config.rules.timezone:
        return ZoneInfo(config.rules.timezone)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def arm_schedule(config: GatewayConfig) -> ArmSchedule:
    """Every shop's opening hours (shops without both times are armed only by code)."""
    return ArmSchedule(
        {
            s.id: OpeningHours(s.opens, s.closes) if s.opens and s.closes else None
            for s in config.shops
        },
        local_zone(config),
    )


def rule_engine(config: GatewayConfig, *, level: Level | None = None) -> RuleEngine:
    """The engine with the rules in force (defaults included) for ``config``."""
    facts = {
        s.id: ShopFacts(
            (s.grid.large, s.grid.medium, s.grid.small), {d.id: d.kind for d in s.devices}
        )
        for s in config.shops
    }
    return RuleEngine(
        [e.rule for e in effective_rules(config.rules)],
        schedule=arm_schedule(config),
        shops=facts,
        level=level or config.rules.level,
    )


def notice_places(config: GatewayConfig, *, other_gateways: bool) -> list[ShopPlace]:
    """The shops a neighbour alert may reach: other gateways' only through the police broker.

    Without a police MQTT forwarder there is no mesh: counting those shops among
    the nearest would leave them and the next own shops untold.
    """
    mesh = any(f.kind == "police_mqtt" for f in config.forwarders)
    return [*config.shops, *(config.other_shops if other_gateways and mesh else [])]
