"""What a condition reads, checked against the item schema; why it matched an item.

* ``references(expression)``: the ``item`` fields a condition names (``item.price``,
  ``has(item.price)``, ``item["price"]``) and the ``metadata`` keys it names
  (``item.metadata.brand``, ``item.metadata["brand"]``), from its tokens (the tokenizer
  of the fast path, ``engine._scan``).
* ``check_known_fields``: an unknown field (``item.nosuchfield``) is refused at save with a
  sentence naming it and the known fields. ``metadata`` is free-form, so its keys are
  only warned about (``metadata_warnings``: a key no recent item has, with the keys seen).
* ``explain(expression, ctx)``: for one item, the value of each top-level part of the
  condition (the operands of its outermost ``&&`` / ``||``) and the fields it read with
  their values — "why it matched".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from backend.errors import ValidationFailed
from backend.rules.engine import SAMPLE_ITEM, _scan

#: The fields of ``item`` (docs/rules.md); ``metadata`` keys are free-form.
KNOWN_FIELDS: tuple[str, ...] = tuple(sorted(SAMPLE_ITEM))
#: A comprehension may name its variable ``item`` (``item.tags.all(item, ...)``): then a
#: later ``item.x`` is not the item, and the field check steps aside.
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
VALUE_CHARS = 120  # a field value shown in a sample hit is cut to this many characters


class UnknownField(ValidationFailed):
    code = "unknown_field"


@dataclass
class References:
    fields: list[str] = field(default_factory=list)  # in order of first use
    metadata_keys: list[str] = field(default_factory=list)
    shadowed: bool = False  # a comprehension variable named ``item``: no check


def _literal(text: str) -> str | None:
    try:
        value = cel.compile(text).execute()
    except Exception:  # noqa: BLE001 - not a plain string literal
        return None
    return value if isinstance(value, str) else None


def references(expression: str) -> References:
    refs = References()
    raw = _scan(expression)
    if raw is None:
        return refs
    toks = [(kind, expression[s:e]) for kind, s, e in raw if kind != "space"]
    for k, (kind, text) in enumerate(toks):
        if kind == "ident" and text in _MACROS and k + 2 < len(toks) \
                and toks[k + 1][1] == "(" and toks[k + 2][1] == "item":
            refs.shadowed = True
        if kind != "ident" or text != "item" or (k > 0 and toks[k - 1][1] == "."):
            continue
        name: str | None = None
        j = k + 1
        if j + 1 < len(toks) and toks[j][1] == "." and toks[j + 1][0] == "ident":
            name, j = toks[j + 1][1], j + 2
        elif j + 2 < len(toks) and toks[j][1] == "[" and toks[j + 1][0] == "str" \
                and toks[j + 2][1] == "]":
            name, j = _literal(toks[j + 1][1]), j + 3
        if name is None:
            continue
        if name not in refs.fields:
            refs.fields.append(name)
        if name != "metadata":
            continue
        key: str | None = None
        if j + 1 < len(toks) and toks[j][1] == "." and toks[j + 1][0] == "ident":
            key = toks[j + 1][1]
        elif j + 2 < len(toks) and toks[j][1] == "[" and toks[j + 1][0] == "str" \
                and toks[j + 2][1] == "]":
            key = _literal(toks[j + 1][1])
        if key is not None and key not in refs.metadata_keys:
            refs.metadata_keys.append(key)
    return refs


def check_known_fields(expression: str) -> References:
    """Refuse a condition naming a field an item does not have (422 ``unknown_field``)."""
    refs = references(expression)
    if refs.shadowed:
        return refs
    unknown = [f for f in refs.fields if f not in KNOWN_FIELDS]
    if unknown:
        names = ", ".join(f"item.{f}" for f in unknown)
        raise UnknownField(
            f"the condition reads {names}, which an item does not have; the fields of an "
            f"item are {', '.join(KNOWN_FIELDS)} (free-form keys go under item.metadata)",
            details={"unknown": unknown, "known": list(KNOWN_FIELDS)})
    return refs


def metadata_warnings(refs: References, seen_keys: Iterable[str], *, items: int) -> list[str]:
    """A sentence per metadata key the condition names that no recent item has."""
    seen = sorted(set(seen_keys))
    missing = [k for k in refs.metadata_keys if k not in seen]
    if not missing:
        return []
    listed = ", ".join(seen[:30]) + (" …" if len(seen) > 30 else "") if seen else "none"
    return [f"item.metadata.{k} is not in the metadata of any of the latest {items} items "
            f"(a typo? metadata keys seen: {listed}); the condition is false on items "
            "without it" for k in missing]


# ---------------------------------------------------------------- why it matched
def top_level_parts(expression: str) -> tuple[str, list[str]]:
    """The operator and operands of the outermost ``&&`` (or ``||``) of a condition:
    ``("&&", ["a", "b"])``; ``("", [expression])`` when it is neither."""
    raw = _scan(expression)
    if raw is None:
        return "", [expression.strip()]
    text = expression.strip()
    for op in ("||", "&&"):  # || binds loosest: split there first
        depth, cuts = 0, []
        for kind, s, e in raw:
            tok = expression[s:e]
            if kind != "op":
                continue
            if tok in "([{":
                depth += 1
            elif tok in ")]}":
                depth -= 1
            elif depth == 0 and tok == "?":
                return "", [text]
            elif depth == 0 and tok == op:
                cuts.append((s, e))
        if cuts:
            bounds = [0] + [x for c in cuts for x in c] + [len(expression)]
            return op, [expression[bounds[i]:bounds[i + 1]].strip()
                        for i in range(0, len(bounds), 2)]
    return "", [text]


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > VALUE_CHARS:
        return value[:VALUE_CHARS] + "…"
    if isinstance(value, (list, dict)):
        text = repr(value)
        return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"
    return value


def explain(expression: str, ctx: Mapping[str, Any], refs: References | None = None
            ) -> dict[str, Any]:
    """Why a condition gave what it gave on one item: each top-level part with its value
    (``true`` / ``false`` / ``error: …``) and each field read with its value (absent:
    ``None`` and ``present: false``)."""
    op, parts = top_level_parts(expression)
    shown_parts = []
    env = cel.Context(dict(ctx))
    for part in parts if len(parts) > 1 else [expression.strip()]:
        try:
            value: Any = cel.compile(part).execute(env)
            value = bool(value) if isinstance(value, bool) else _shown(value)
        except KeyError as exc:
            value = f"error: this item has no {exc}"
        except Exception as exc:  # noqa: BLE001 - a type error or another failure: say so
            value = f"error: {str(exc).split('. ')[0][:VALUE_CHARS]}"
        shown_parts.append({"expression": part, "value": value})
    refs = refs or references(expression)
    item = ctx.get("item") or {}
    values = []
    for name in refs.fields:
        if name == "metadata" and refs.metadata_keys:
            meta = item.get("metadata") or {}
            values += [{"field": f"metadata.{k}", "present": k in meta,
                        "value": _shown(meta.get(k))} for k in refs.metadata_keys]
            continue
        values.append({"field": name, "present": name in item, "value": _shown(item.get(name))})
    return {"operator": op, "parts": shown_parts, "fields": values}
