"""Rules as data: conditions in CEL (Common Expression Language), never Python ``eval``.

CEL is non-Turing-complete, side-effect free and sandboxed; we use the Rust
implementation through the ``common-expression-language`` package (``cel``), which
evaluates a compiled program in microseconds.

A condition sees one variable, ``item``, a map with these keys (a key whose value is
unknown is *absent*: guard optional fields with ``has(item.price)``)::

    source, external_id, title, description, text (title + description, lower case),
    image, has_image, url, price, currency, seller_id, category, gmv, exposure,
    is_new, is_golden, safety_score, metadata (map), tags (list of strings)

Examples: ``has(item.price) && item.price < 1.0 && item.text.contains("iphone")``,
``item.text.matches("(?i)replica|fake")``, ``item.category in ["knives", "weapons"]``.

An expression that does not parse, names an unknown variable or function, or does not
give a boolean on a sample item is refused at load time with its position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel

from backend.errors import ValidationFailed

_POS = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")

SAMPLE_ITEM: dict[str, Any] = {
    "source": "shop", "external_id": "1", "title": "Sample title",
    "description": "sample description", "text": "sample title sample description",
    "image": "img.jpg", "has_image": True, "url": "https://example.test/1", "price": 10.0,
    "currency": "USD", "seller_id": "s1", "category": "toys", "gmv": 1.0, "exposure": 1.0,
    "is_new": True, "is_golden": False, "safety_score": 0.1, "metadata": {"k": "v"},
    "tags": ["t"],
}


def item_context(row: Mapping[str, Any], tags: Sequence[str] = ()) -> dict[str, Any]:
    """The CEL ``item`` map for an item (a mapping of its columns)."""
    title = row.get("title") or ""
    description = row.get("description") or ""
    ctx: dict[str, Any] = {
        "source": row.get("source") or "",
        "external_id": row.get("external_id") or "",
        "title": title,
        "description": description,
        "text": f"{title} {description}".lower(),
        "has_image": bool(row.get("image")),
        "is_new": bool(row.get("is_new")),
        "is_golden": bool(row.get("is_golden")),
        "metadata": row.get("metadata") or row.get("metadata_") or {},
        "tags": list(tags),
    }
    for key in ("image", "url", "currency", "seller_id", "category"):
        if row.get(key) is not None:
            ctx[key] = str(row[key])
    for key in ("price", "gmv", "exposure", "safety_score"):
        if row.get(key) is not None:
            ctx[key] = float(row[key])
    return {"item": ctx}


class ExpressionError(ValidationFailed):
    code = "invalid_expression"


def _position_error(expression: str, exc: Exception) -> ExpressionError:
    text = str(exc)
    m = _POS.search(text)
    if m:
        line, col, msg = int(m.group(1)), int(m.group(2)), m.group(3).strip()
        return ExpressionError(
            f"expression error at line {line}, column {col}: {msg}",
            details={"line": line, "column": col, "message": msg, "expression": expression},
        )
    return ExpressionError(f"expression error: {text}",
                           details={"message": text, "expression": expression})


def compile_condition(expression: str) -> cel.Program:
    """Compile and check an expression; raise ``ExpressionError`` with its position."""
    if not expression or not expression.strip():
        raise ExpressionError("the condition is empty")
    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise _position_error(expression, exc) from exc
    try:
        result = program.execute({"item": SAMPLE_ITEM})
    except KeyError:
        return program  # e.g. a metadata key the sample item lacks: data-dependent
    except (RuntimeError, TypeError, ValueError) as exc:
        text = str(exc)
        if "No such key" in text:
            return program  # e.g. a metadata key the sample item lacks: data-dependent
        raise ExpressionError(f"expression error: {text.split('. ')[0]}",
                              details={"message": text, "expression": expression}) from exc
    if not isinstance(result, bool):
        raise ExpressionError(
            f"the condition must give true or false, it gave {type(result).__name__}",
            details={"expression": expression})
    return program


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    version: int
    position: int
    action: str
    mode: str
    program: Any
    label: str | None = None
    queue_kind: str | None = None
    priority: int | None = None
    tag: str | None = None

    def matches(self, ctx: Mapping[str, Any]) -> bool:
        try:
            return self.program.execute(ctx) is True
        except (RuntimeError, TypeError, ValueError, KeyError):
            return False  # missing field / wrong type on this item: not a hit


@dataclass
class RuleOutcome:
    decision: CompiledRule | None = None
    route: CompiledRule | None = None
    tags: list[CompiledRule] = field(default_factory=list)
    hits: list[CompiledRule] = field(default_factory=list)  # active and shadow hits


@dataclass
class RuleSet:
    """The rules in evaluation order (``position``, then name). ``off`` rules are left out."""

    rules: list[CompiledRule]

    @classmethod
    def build(cls, rules: Iterable[CompiledRule]) -> RuleSet:
        return cls(sorted((r for r in rules if r.mode != "off"),
                          key=lambda r: (r.position, r.name)))

    def evaluate(self, ctx: Mapping[str, Any]) -> RuleOutcome:
        """Precedence: the first active ``decide`` wins and stops evaluation; the first
        active ``route`` before it picks the queue; every active ``tag`` hit applies;
        shadow rules are evaluated and recorded but never act."""
        out = RuleOutcome()
        for rule in self.rules:
            if not rule.matches(ctx):
                continue
            out.hits.append(rule)
            if rule.mode == "shadow":
                continue
            if rule.action == "decide":
                out.decision = rule
                break
            if rule.action == "route" and out.route is None:
                out.route = rule
            elif rule.action == "tag":
                out.tags.append(rule)
        return out
