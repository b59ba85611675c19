"""What a condition may cost: checked from its tokens before CEL compiles or runs it.

CEL has no loops and no recursion; its only source of repeated work is the comprehension
macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``), each running its body
once per element of its receiver. Nested, they multiply: four nested ``all`` over a
100-element list run the innermost body 100,000,000 times (~50 s in the Rust engine, the
GIL held all along). So a condition is refused at save when

* it is longer than ``max_expression_chars``,
* its comprehensions nest deeper than ``max_comprehension_depth``,
* a list or map literal has more than ``max_literal_elements`` elements, or
* its **estimated cost** is over ``max_cost``: every token costs one step, times the
  iterations of every comprehension around it; a comprehension over a literal iterates
  its element count, one over item data (``item.tags``, ``item.metadata.x``, the result
  of another macro) ``assumed_data_elements``.

The estimate is an upper bound on the work for literals and a guess for item data; the
per-item time budget (``item_budget_ms``, see ``RuleSet``) catches what the guess misses.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.rules.settings import RuleSettings, get_rule_settings

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass
class _Frame:
    bracket: str
    column: int
    factor: int = 1  # iterations of the body (comprehension macros only)
    macro: str | None = None
    receiver: int = 1  # elements the macro iterates over
    elements: int = 0  # commas at this level (+1 when not empty): literal size
    empty: bool = True


@dataclass(frozen=True)
class CostReport:
    """What the checks measured on one condition."""

    chars: int
    depth: int
    largest_literal: int
    cost: int


def _tokens(expression: str) -> list[tuple[str, int, int]] | None:
    from backend.rules.engine import _scan  # the tokenizer the fast path uses

    tokens = _scan(expression)
    return None if tokens is None else [t for t in tokens if t[0] != "space"]


def measure(expression: str, limits: RuleSettings | None = None) -> CostReport | None:
    """The condition's size, nesting and estimated cost; ``None`` when it cannot be
    tokenized (CEL's parser then says why)."""
    limits = limits or get_rule_settings()
    tokens = _tokens(expression)
    if tokens is None:
        return None
    stack: list[_Frame] = []
    closed_size: dict[int, int] = {}  # index of a closing token -> elements it stands for
    depth = largest = 0
    cost = 0
    multiplier = 1
    for k, (kind, start, end) in enumerate(tokens):
        text = expression[start:end]
        if stack and not (kind == "op" and text in (",", ")", "]", "}")):
            stack[-1].empty = False
        if kind == "op" and text in _OPEN:
            prev = expression[tokens[k - 1][1]:tokens[k - 1][2]] if k else ""
            prev_kind = tokens[k - 1][0] if k else ""
            frame = _Frame(bracket=text, column=start)
            if (text == "(" and k >= 2 and prev_kind == "ident" and prev in MACROS
                    and expression[tokens[k - 2][1]:tokens[k - 2][2]] == "."):
                frame.macro = prev
                frame.receiver = closed_size.get(k - 3, limits.assumed_data_elements)
                frame.factor = max(frame.receiver, 1)
                multiplier *= frame.factor
                depth = max(depth, sum(1 for f in stack if f.macro) + 1)
            elif text in "[{" and (prev_kind in ("ident", "str") or prev in (")", "]")):
                frame.bracket = "index" if text == "[" else "message"
            stack.append(frame)
            cost += multiplier
            continue
        if kind == "op" and text == "," and stack:
            stack[-1].elements += 1
        elif kind == "op" and text in (")", "]", "}") and stack:
            frame = stack.pop()
            size = frame.elements + (0 if frame.empty else 1)
            if frame.bracket in ("[", "{"):
                largest = max(largest, size)
                closed_size[k] = size
            elif frame.macro in ("map", "filter"):
                closed_size[k] = frame.receiver  # as many elements as it iterated, at most
            if frame.macro:
                multiplier //= frame.factor
        cost += multiplier
    return CostReport(chars=len(expression), depth=depth, largest_literal=largest, cost=cost)


def check(expression: str, limits: RuleSettings | None = None) -> str | None:
    """A sentence saying which limit the condition breaks, or ``None`` when it is within."""
    limits = limits or get_rule_settings()
    if len(expression) > limits.max_expression_chars:
        return (f"the condition is {len(expression):,} characters long; the limit is "
                f"{limits.max_expression_chars:,}")
    report = measure(expression, limits)
    if report is None:
        return None
    if report.depth > limits.max_comprehension_depth:
        return (f"the condition nests comprehensions (all, exists, exists_one, map, filter) "
                f"{report.depth} deep; the limit is {limits.max_comprehension_depth}")
    if report.largest_literal > limits.max_literal_elements:
        return (f"a list or map literal in the condition has {report.largest_literal:,} "
                f"elements; the limit is {limits.max_literal_elements:,}")
    if report.cost > limits.max_cost:
        return (f"the condition's estimated cost is {report.cost:,} steps; the limit is "
                f"{limits.max_cost:,} (each comprehension multiplies the cost of its body "
                f"by the elements it iterates; see docs/rules.md)")
    return None
