"""The rule engine: which rules an event fires, and with which actions.

Deciding is pure and fast (rules are indexed by event kind and compiled once);
doing is the gateway's (``gateway/actions.py``), so ``lianfang rules test`` can
show what an event would trigger without doing it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from gateway.events import Event, EventKind
from gateway.ratelimit import RateLimitedLog
from rules.arming import ArmSchedule
from rules.defaults import DEFAULT_RULES
from rules.expr import Condition, ExpressionError
from rules.models import Action, Level, Rule, RulesConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Firing:
    """One action of one rule that an event fired."""

    rule: str
    action: Action


@dataclass(frozen=True, slots=True)
class EffectiveRule:
    """A rule in force and where it came from: ``default``, ``config`` or ``replaces default``."""

    rule: Rule
    origin: str


@dataclass(frozen=True, slots=True)
class ShopFacts:
    """What rules may ask about a shop."""

    cells: tuple[str, str, str]
    """Large, medium and small grid cell."""
    device_kinds: dict[str, str]


def effective_rules(config: RulesConfig) -> list[EffectiveRule]:
    """Defaults (unless switched off), each replaced by an own rule of its name; then own rules."""
    own = {r.name: r for r in config.rules}
    found = [
        EffectiveRule(own.pop(d.name), "replaces default")
        if d.name in own
        else EffectiveRule(d, "default")
        for d in (DEFAULT_RULES if config.defaults else ())
        if d.name not in config.disable
    ]
    return found + [EffectiveRule(r, "config") for r in config.rules if r.name in own]


class _Compiled:
    __slots__ = ("condition", "firings", "rule", "when_cells", "when_levels", "when_shops")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        w = rule.when
        self.when_levels = frozenset(w.levels) if w.levels is not None else None
        self.when_shops = frozenset(w.shops) if w.shops is not None else None
        self.when_cells = frozenset(w.cells) if w.cells is not None else None
        self.condition = Condition(rule.condition) if rule.condition else None
        self.firings = tuple(Firing(rule.name, a) for a in rule.do)


class RuleEngine:
    """Matches events against the rules in force at the current alert level."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        schedule: ArmSchedule,
        shops: dict[str, ShopFacts],
        level: Level = Level.EVERYDAY,
    ) -> None:
        """Compile ``rules``; ``schedule`` says which shops are armed."""
        self.level = level
        self.rules = tuple(rules)
        self.schedule = schedule
        self._shops = shops
        self._by_kind: dict[EventKind, list[_Compiled]] = {k: [] for k in EventKind}
        for rule in rules:
            compiled = _Compiled(rule)
            for kind in dict.fromkeys(rule.when.kinds):
                self._by_kind[kind].append(compiled)
        self.failed = 0
        self._log = RateLimitedLog(logger, interval_s=60)

    def evaluate(self, event: Event, *, at: datetime | None = None) -> list[Firing]:
        """The actions ``event`` fires, in rule order; ``at`` defaults to when it occurred."""
        candidates = self._by_kind[event.kind]
        if not candidates:
            return []
        at = at or event.occurred_at
        facts = self._shops.get(event.shop_id) if event.shop_id is not None else None
        names: dict[str, Any] | None = None
        fired: list[Firing] = []
        for c in candidates:
            if not (self._fits(c, event, facts) and self._in_time(c, event.shop_id, at)):
                continue
            if c.condition is not None:
                names = names or self._names(event, at, facts)
                try:
                    if not c.condition(names):
                        continue
                except ExpressionError as exc:
                    self.failed += 1
                    self._log.warning(
                        f"rule:{c.rule.name}", "rule %s: 'if' failed: %s", c.rule.name, exc
                    )
                    continue
            fired.extend(c.firings)
        return fired

    def _fits(self, c: _Compiled, event: Event, facts: ShopFacts | None) -> bool:
        """Level, shop, cell and device kind."""
        device_kinds = c.rule.when.device_kinds
        return (
            (c.when_levels is None or self.level in c.when_levels)
            and (c.when_shops is None or event.shop_id in c.when_shops)
            and (
                c.when_cells is None
                or (facts is not None and not c.when_cells.isdisjoint(facts.cells))
            )
            and (
                device_kinds is None
                or (facts is not None and facts.device_kinds.get(event.device_id) in device_kinds)
            )
        )

    def _in_time(self, c: _Compiled, shop_id: str | None, at: datetime) -> bool:
        """Arm state and local time windows."""
        w = c.rule.when
        if w.armed is not None and self.schedule.armed(shop_id, at) is not w.armed:
            return False
        if w.between is None:
            return True
        local = at.astimezone(self.schedule.zone).time()
        return any(window.contains(local) for window in w.between)

    def _names(self, event: Event, at: datetime, facts: ShopFacts | None) -> dict[str, Any]:
        local = at.astimezone(self.schedule.zone)
        cells = facts.cells if facts else (None, None, None)
        return {
            "kind": event.kind.value,
            "shop_id": event.shop_id,
            "device_id": event.device_id,
            "device_kind": facts.device_kinds.get(event.device_id) if facts else None,
            "zone": event.zone,
            "attrs": MappingProxyType(event.attrs),  # read-only: an 'if' cannot change the event
            "level": self.level.value,
            "armed": self.schedule.armed(event.shop_id, at),
            "hour": local.hour,
            "weekday": local.weekday(),
            "large_grid": cells[0],
            "medium_grid": cells[1],
            "small_grid": cells[2],
        }
