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
import time
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


class RuleTooExpensive(ExpressionError):
    """The condition breaks a limit of ``backend.rules.limits`` (checked before CEL runs)."""

    code = "rule_too_expensive"


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
    if "\x00" in expression:
        raise ExpressionError("the condition contains a NUL character")
    from backend.rules.limits import check

    problem = check(expression)
    if problem is not None:
        raise RuleTooExpensive(problem, details={"expression": expression[:200]})
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
    fast: FastCondition | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        source = getattr(self.program, "source", None)
        if self.fast is None and isinstance(source, str):
            object.__setattr__(self, "fast", fast_condition(source))

    def matches(self, ctx: Mapping[str, Any]) -> bool:
        if self.fast is not None:
            hit = self.fast.run(ctx)
            if hit is not None:
                return hit
        return self.execute(ctx)

    def execute(self, ctx: Any) -> bool:
        """The condition evaluated by CEL itself (no fast path)."""
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


@dataclass(frozen=True)
class OverBudget:
    """A rule took longer than the per-item budget on one item."""

    rule: CompiledRule
    elapsed_ms: float
    budget_ms: float
    item: str  # source/external_id of the item it was evaluated on

    @property
    def message(self) -> str:
        return (f"rule {self.rule.name!r} took {self.elapsed_ms:.1f} ms on item {self.item}, "
                f"over the per-item budget of {self.budget_ms:g} ms "
                f"(QUORUM_RULE_ITEM_BUDGET_MS); it was switched off")


@dataclass
class RuleSet:
    """The rules in evaluation order (``position``, then name). ``draft`` and ``off`` rules
    are left out.

    With ``budget_ms``, each rule's evaluation on each item is timed; a rule over the
    budget is listed in ``over_budget`` and skipped from the next item on (the caller
    switches it off in the database: ``service.switch_off_over_budget``).
    """

    rules: list[CompiledRule]
    budget_ms: float | None = None
    over_budget: dict[int, OverBudget] = field(default_factory=dict)
    #: rules switched off while this set was compiled (they no longer pass the checks)
    switched_off: int = 0

    @classmethod
    def build(cls, rules: Iterable[CompiledRule], *, budget_ms: float | None = None,
              switched_off: int = 0) -> RuleSet:
        return cls(sorted((r for r in rules if r.mode in ("active", "shadow")),
                          key=lambda r: (r.position, r.name)), budget_ms=budget_ms,
                   switched_off=switched_off)

    def evaluate(self, ctx: Mapping[str, Any]) -> RuleOutcome:
        """Precedence: the first active ``decide`` wins and stops evaluation; the first
        active ``route`` before it picks the queue; every active ``tag`` hit applies;
        shadow rules are evaluated and recorded but never act."""
        out = RuleOutcome()
        env: Any = None
        budget = self.budget_ms
        for rule in self.rules:
            if budget is not None and rule.id in self.over_budget:
                continue
            started = time.perf_counter()
            hit = rule.fast.run(ctx) if rule.fast is not None else None
            if hit is None:
                if env is None:
                    converted = time.perf_counter()
                    env = cel.Context(dict(ctx))  # converted once, shared by the rules
                    started += time.perf_counter() - converted  # not this rule's cost
                hit = rule.execute(env)
            if budget is not None:
                elapsed = (time.perf_counter() - started) * 1000
                if elapsed > budget:
                    item = ctx.get("item") or {}
                    self.over_budget[rule.id] = OverBudget(
                        rule=rule, elapsed_ms=elapsed, budget_ms=budget,
                        item=f"{item.get('source', '?')}/{item.get('external_id', '?')}")
            if not hit:
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


# ---------------------------------------------------------------- fast path
# Evaluating a CEL program costs ~50 us to convert the ``item`` map, plus, for every
# ``matches()``, a fresh compile of its regex in the Rust engine (~350 us for a
# case-insensitive pattern with word boundaries). With a few regex rules that is ~1 ms
# an item, the whole ingest budget. The fast path below gives *exactly* the same
# answer for the common shape of a rule, and otherwise steps aside (``None``):
#
# * a top-level conjunct ``item.<field>.matches("<pattern>")`` whose pattern uses only
#   literal ASCII characters, ``\b``, groups and ``|`` (optionally ``(?i)``) is decided
#   in Python's ``re`` when the field is an ASCII string: on that subset and on ASCII
#   text, Python's and Rust's regex engines agree. A false conjunct makes the rule false
#   (``false && x`` is false, or an error, which is "no hit" as well); a true one drops
#   out and the other conjuncts are evaluated by CEL;
# * when the condition reads ``item`` only as ``item.<field>``, CEL gets a map holding
#   just those fields (same values, same presence for ``has()``), not the whole item.

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_PREFIXES = {"r", "R", "b", "B", "rb", "rB", "Rb", "RB", "br", "bR", "Br", "BR"}
_MATCHES_CALL = re.compile(r"item\.([A-Za-z_][A-Za-z0-9_]*)\.matches\((.*)\)", re.S)
_REGEX_META = set(".^$*+?{}[]()|\\")
_fast_cache: dict[str, FastCondition | None] = {}


def _scan(expr: str) -> list[tuple[str, int, int]] | None:
    """CEL tokens as ``(kind, start, end)``: ``str``, ``ident``, ``op`` (one or two
    characters), ``space``; ``None`` when the text is not understood (unterminated string)."""
    out: list[tuple[str, int, int]] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if expr.startswith("//", i):
            j = expr.find("\n", i)
            j = n if j < 0 else j
            out.append(("space", i, j))
            i = j
            continue
        if c.isspace():
            j = i
            while j < n and expr[j].isspace():
                j += 1
            out.append(("space", i, j))
            i = j
            continue
        m = _IDENT.match(expr, i)
        if m:
            j = m.end()
            if j < n and expr[j] in "'\"" and m.group() in _STRING_PREFIXES:
                end = _string_end(expr, j, raw="r" in m.group().lower())
                if end is None:
                    return None
                out.append(("str", i, end))
                i = end
                continue
            out.append(("ident", i, j))
            i = j
            continue
        if c in "'\"":
            end = _string_end(expr, i, raw=False)
            if end is None:
                return None
            out.append(("str", i, end))
            i = end
            continue
        if expr.startswith(("&&", "||", "==", "!=", "<=", ">="), i):
            out.append(("op", i, i + 2))
            i += 2
            continue
        out.append(("op", i, i + 1))
        i += 1
    return out


def _string_end(expr: str, i: int, *, raw: bool) -> int | None:
    quote = expr[i] * 3 if expr.startswith(expr[i] * 3, i) else expr[i]
    j = i + len(quote)
    while j < len(expr):
        if not raw and expr[j] == "\\":
            j += 2
            continue
        if expr.startswith(quote, j):
            return j + len(quote)
        if len(quote) == 1 and expr[j] == "\n":
            return None
        j += 1
    return None


def _python_regex(pattern: str) -> re.Pattern[str] | None:
    """Python's equivalent of ``pattern`` (Rust syntax) on ASCII text, or ``None`` when the
    pattern uses anything beyond ASCII literals, ``\\b``, groups and ``|``."""
    flags = 0
    if pattern.startswith("(?i)"):
        flags, pattern = re.IGNORECASE, pattern[4:]
    parts: list[str] = []
    depth, i = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt == "b":
                parts.append(r"\b")
            elif nxt and nxt in _REGEX_META:
                parts.append(re.escape(nxt))
            else:
                return None  # classes (\d, \w, ...), anchors, escapes of letters
            i += 2
            continue
        if c == "(":
            if pattern.startswith("(?:", i):
                i += 3
            elif pattern.startswith("(?", i):
                return None  # other flags or group kinds
            else:
                i += 1
            parts.append("(?:")
            depth += 1
            continue
        if c == ")":
            if depth == 0:
                return None
            depth -= 1
            parts.append(")")
        elif c == "|":
            parts.append("|")
        elif c in _REGEX_META or not (c.isascii() and c.isprintable()):
            return None
        else:
            parts.append(re.escape(c))
        i += 1
    if depth:
        return None
    try:
        return re.compile("".join(parts), flags)
    except re.error:
        return None


@dataclass(frozen=True)
class FastCondition:
    """A condition split into Python-decided regex conjuncts and a CEL remainder."""

    regexes: tuple[tuple[str, re.Pattern[str]], ...]
    rest: Any  # cel.Program for the other conjuncts; None: nothing else (true)
    fields: tuple[str, ...] | None  # the item fields the remainder reads; None: all

    def run(self, ctx: Mapping[str, Any]) -> bool | None:
        """The condition's value on ``ctx`` (errors count as false), or ``None``: use CEL."""
        item = ctx.get("item")
        if type(item) is not dict or len(ctx) != 1:
            return None
        for field_name, rx in self.regexes:
            value = item.get(field_name)
            if type(value) is not str or not value.isascii():
                return None
            if rx.search(value) is None:
                return False
        if self.rest is None:
            return True
        if self.fields is None:
            return None
        small = {"item": {k: item[k] for k in self.fields if k in item}}
        try:
            return self.rest.execute(small) is True
        except (RuntimeError, TypeError, ValueError, KeyError):
            return False


def fast_condition(expression: str) -> FastCondition | None:
    """The fast path for ``expression`` (cached), or ``None`` when it has none."""
    if expression not in _fast_cache:
        try:
            _fast_cache[expression] = _analyse(expression)
        except Exception:  # noqa: BLE001 - any doubt: no fast path, CEL decides
            _fast_cache[expression] = None
    return _fast_cache[expression]


def _analyse(expression: str) -> FastCondition | None:
    tokens = _scan(expression)
    if tokens is None:
        return None
    depth = 0
    cuts: list[tuple[int, int]] = []
    for kind, start, end in tokens:
        text = expression[start:end]
        if kind != "op":
            continue
        if text in "([{":
            depth += 1
        elif text in ")]}":
            depth -= 1
        elif depth == 0 and text in ("||", "?"):
            return None  # not a plain conjunction at the top level
        elif depth == 0 and text == "&&":
            cuts.append((start, end))
    if depth != 0:
        return None
    bounds = [0] + [x for cut in cuts for x in cut] + [len(expression)]
    conjuncts = [expression[bounds[k]:bounds[k + 1]].strip() for k in range(0, len(bounds), 2)]
    regexes: list[tuple[str, re.Pattern[str]]] = []
    others: list[str] = []
    for part in conjuncts:
        m = _MATCHES_CALL.fullmatch(part)
        rx = None
        if m:
            arg = m.group(2).strip()
            arg_tokens = _scan(arg)
            if arg_tokens and len(arg_tokens) == 1 and arg_tokens[0][0] == "str":
                literal = cel.compile(arg).execute()
                if isinstance(literal, str):
                    rx = _python_regex(literal)
        if rx is not None and m is not None:
            regexes.append((m.group(1), rx))
        else:
            others.append(part)
    rest_expr = " && ".join(f"({p}\n)" for p in others)
    rest = cel.compile(rest_expr) if others else None
    fields = _item_fields(rest_expr, rest) if rest is not None else ()
    if not regexes and fields is None:
        return None
    return FastCondition(regexes=tuple(regexes), rest=rest, fields=fields)


def _item_fields(expression: str, program: Any) -> tuple[str, ...] | None:
    """The fields of ``item`` an expression reads when it reads ``item`` only as
    ``item.<field>`` (not the map itself, not a method on it); else ``None``."""
    if set(program.variables()) - {"item"}:
        return None
    tokens = [t for t in (_scan(expression) or []) if t[0] != "space"]
    if not tokens:
        return None
    fields: set[str] = set()
    for k, (kind, start, end) in enumerate(tokens):
        if kind != "ident" or expression[start:end] != "item":
            continue
        if k > 0 and expression[tokens[k - 1][1]:tokens[k - 1][2]] == ".":
            continue  # a field named "item" of something else
        nxt = tokens[k + 1:k + 4]
        if (len(nxt) < 2 or expression[nxt[0][1]:nxt[0][2]] != "." or nxt[1][0] != "ident"
                or (len(nxt) > 2 and expression[nxt[2][1]:nxt[2][2]] == "(")):
            return None
        fields.add(expression[nxt[1][1]:nxt[1][2]])
    return tuple(sorted(fields))
