"""Checks of the rules against the rest of the config: every name a rule uses must exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rules.defaults import DEFAULT_RULES
from rules.models import Escalate, Forward, Siren

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig, Loc


def unknown_names(config: GatewayConfig) -> list[tuple[Loc, str]]:
    """Each forwarder, shop or default rule a rule names that the config lacks, with where."""
    forwarders = {f.name for f in config.forwarders}
    shops = {s.id for s in config.shops}
    defaults = {r.name for r in DEFAULT_RULES}
    found: list[tuple[Loc, str]] = [
        (
            ("rules", "disable", i),
            f"no default rule {name!r} (defaults: {', '.join(sorted(defaults))})",
        )
        for i, name in enumerate(config.rules.disable)
        if name not in defaults
    ]
    for i, rule in enumerate(config.rules.rules):
        for j, action in enumerate(rule.do):
            at: Loc = ("rules", "rules", i, "do", j)
            if isinstance(action, Forward | Escalate):
                found += [
                    ((*at, "to"), f"rule {rule.name!r}: no forwarder named {name!r}")
                    for name in action.to or ()
                    if name not in forwarders
                ]
            if isinstance(action, Siren) and action.shop != "origin" and action.shop not in shops:
                found.append(((*at, "shop"), f"rule {rule.name!r}: no shop {action.shop!r} here"))
    return found
