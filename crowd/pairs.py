"""Pair tasks ("do these two items deserve the same decision?"): their key and answers.

A pair task's ``item_id`` input is the pair key ``"<a>|<b>"`` (item ``a`` is shown as
item A, ``b`` as item B); its output ``same_decision`` is ``yes`` or ``no``. No
toloka-kit here, so the emulator can use it too.
"""

from __future__ import annotations

#: Answers to a pair task (``yes``: the same decision), and the separator in a pair key.
PAIR_ANSWERS = ("yes", "no")
PAIR_SEP = "|"


def pair_key(a: object, b: object) -> str:
    """The ``item_id`` input of the pair task showing ``a`` as item A and ``b`` as item B."""
    return f"{a}{PAIR_SEP}{b}"


def split_pair_key(key: object) -> tuple[str, str] | None:
    """``(a, b)`` of a pair key, or None when ``key`` is not one."""
    a, sep, b = str(key).partition(PAIR_SEP)
    return (a, b) if sep and a and b and PAIR_SEP not in b else None


def pair_truth(truth_a: str | None, truth_b: str | None) -> str | None:
    """The answer a pair deserves from its items' labels: ``yes`` iff they are equal
    (None when either is unknown)."""
    if truth_a is None or truth_b is None:
        return None
    return PAIR_ANSWERS[0] if truth_a == truth_b else PAIR_ANSWERS[1]
