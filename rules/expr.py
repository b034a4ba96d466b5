"""The ``if`` of a rule: a safe expression language (simpleeval), never Python's ``eval``.

An expression sees only the names in ``NAMES``; it may compare, combine with
``and``/``or``/``not``, index ``attrs`` and test membership. It cannot import,
call arbitrary functions or reach attributes of Python objects.
"""

from __future__ import annotations

import ast
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

NAMES: dict[str, str] = {
    "kind": "event kind, e.g. 'panic'",
    "shop_id": "shop the event came from (or None)",
    "device_id": "device it came from",
    "device_kind": "kind of that device in the config (or None)",
    "zone": "zone on the device (or None)",
    "attrs": "the event's free-form details, a mapping",
    "level": "alert level: 'everyday', 'heightened' or 'extraordinary'",
    "armed": "whether the shop is armed now",
    "hour": "local hour of the event, 0-23",
    "weekday": "local weekday, 0 = Monday",
    "large_grid": "the shop's large grid cell (or None)",
    "medium_grid": "the shop's medium grid cell (or None)",
    "small_grid": "the shop's small grid cell (or None)",
}
MAX_LENGTH = 500


class ExpressionError(ValueError):
    """An expression that cannot be used, with the reason in words."""


class Condition:
    """One compiled ``if`` expression."""

    def __init__(self, text: str) -> None:
        """Parse ``text`` once; raise ``ExpressionError`` if it is not a usable expression."""
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
        self.text = text
        self._evaluator = EvalWithCompoundTypes(names={}, functions={})
        try:
            # One expression, not statements: "kind = 1" or "a; b" are refused here.
            ast.parse(text.strip(), mode="eval")
            self._tree = self._evaluator.parse(text)
        except SyntaxError as exc:
            raise ExpressionError(f"not a valid expression: {exc.msg}") from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise ExpressionError(f"not a valid expression: {exc.__class__.__name__}") from None
        unknown = sorted(
            {n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)} - set(NAMES)
        )
        if unknown:
            raise ExpressionError(
                f"unknown name {', '.join(map(repr, unknown))} (known: {', '.join(NAMES)})"
            )

    def __call__(self, names: dict[str, Any]) -> bool:
        """Whether the expression holds for ``names``; raise ``ExpressionError`` if it fails."""
        self._evaluator.names = names
        try:
            return bool(self._evaluator.eval(self.text, previously_parsed=self._tree))
        except (
            InvalidExpression,
            TypeError,
            KeyError,
            IndexError,
            ValueError,
            ArithmeticError,
        ) as exc:
            raise ExpressionError(f"{exc.__class__.__name__}: {exc}") from None
