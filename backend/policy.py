"""The moderation policy: the label set and what each label means (YAML, versioned)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from backend.errors import ValidationFailed

DEFAULT_POLICY = Path(__file__).parent / "defaults" / "policy.yaml"
KINDS = ("ok", "hide", "bad", "error")


@dataclass(frozen=True)
class Label:
    key: str
    title: str
    kind: str
    shortcut: str | None = None
    description: str = ""


GROUP_SCORES = ("one_minus_ok", "sum")


@dataclass(frozen=True)
class LabelGroup:
    """Labels decided together ("remove vs keep") while people pick the reason.

    ``score``: how the group's score is made from the classifier's probabilities,
    ``one_minus_ok`` (``1 - P(ok)``) or ``sum`` (of the members'); see
    ``ml.families.group_scores``.
    """

    name: str
    labels: tuple[str, ...]
    score: str = "sum"


@dataclass(frozen=True)
class Policy:
    name: str
    version: int
    labels: tuple[Label, ...]
    groups: tuple[LabelGroup, ...] = ()

    @property
    def keys(self) -> list[str]:
        return [lab.key for lab in self.labels]

    @property
    def class_keys(self) -> list[str]:
        """Labels a classifier predicts (everything but the ``error`` answer)."""
        return [lab.key for lab in self.labels if lab.kind != "error"]

    @property
    def kinds(self) -> dict[str, str]:
        return {lab.key: lab.kind for lab in self.labels}

    @property
    def ok_key(self) -> str:
        return next(lab.key for lab in self.labels if lab.kind == "ok")

    def label(self, key: str) -> Label:
        for lab in self.labels:
            if lab.key == key:
                return lab
        raise ValidationFailed(f"unknown label {key!r}; the policy's labels are {self.keys}")

    def check(self, key: str) -> str:
        return self.label(key).key

    def is_bad(self, key: str) -> bool:
        return self.kinds.get(key) in ("bad", "hide")

    @property
    def group_members(self) -> dict[str, list[str]]:
        """``{group name: [member label keys]}``."""
        return {g.name: list(g.labels) for g in self.groups}

    def group_of(self, key: str) -> str | None:
        """The group a label belongs to, or None."""
        return next((g.name for g in self.groups if key in g.labels), None)


def _parse_groups(raw: object, labels: tuple[Label, ...]) -> tuple[LabelGroup, ...]:
    """``groups:`` as ``{name: [labels]}`` or ``{name: {labels: [...], score: ...}}``."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValidationFailed("policy: groups must map a group name to its labels, "
                               "e.g. groups: {action: [offensive, hate]}")
    kinds = {lab.key: lab.kind for lab in labels}
    groups: list[LabelGroup] = []
    seen: dict[str, str] = {}
    for name, spec in raw.items():
        name = str(name)
        members = spec.get("labels") if isinstance(spec, dict) else spec
        if not isinstance(members, list) or not members:
            raise ValidationFailed(f"policy: group {name!r} needs a non-empty list of labels")
        members = [str(m) for m in members]
        if name in kinds:
            raise ValidationFailed(f"policy: group {name!r} has the name of a label")
        for m in members:
            if m not in kinds:
                raise ValidationFailed(f"policy: group {name!r} names unknown label {m!r}")
            if kinds[m] not in ("bad", "hide"):
                raise ValidationFailed(f"policy: group {name!r}: label {m!r} has kind "
                                       f"{kinds[m]!r}; a group holds bad or hide labels")
            if m in seen:
                raise ValidationFailed(f"policy: label {m!r} is in groups {seen[m]!r} "
                                       f"and {name!r}; a label belongs to one group")
            seen[m] = name
        every_bad = sorted(members) == sorted(k for k, v in kinds.items() if v in ("bad", "hide"))
        default = "one_minus_ok" if every_bad else "sum"
        score = str(spec.get("score", default)) if isinstance(spec, dict) else default
        if score not in GROUP_SCORES:
            raise ValidationFailed(f"policy: group {name!r} has score {score!r}; "
                                   f"use one of {GROUP_SCORES}")
        if score == "one_minus_ok" and not every_bad:
            raise ValidationFailed(f"policy: group {name!r} scores 1 - P(ok) but does not "
                                   "hold every bad and hide label; use score: sum")
        groups.append(LabelGroup(name=name, labels=tuple(members), score=score))
    return tuple(groups)


def parse_policy(data: object) -> Policy:
    """A `Policy` from the policy file's YAML data; `ValidationFailed` with one sentence
    saying what is wrong otherwise."""
    if not isinstance(data, dict):
        raise ValidationFailed("policy: the file must be a mapping with `name`, `version` "
                               f"and `labels`, not {type(data).__name__}")
    raw_labels = data.get("labels")
    if not isinstance(raw_labels, list) or not raw_labels:
        raise ValidationFailed("policy: `labels` must be a non-empty list of labels")
    try:
        labels = tuple(
            Label(
                key=str(lab["key"]),
                title=str(lab.get("title", lab["key"])),
                kind=str(lab.get("kind", "bad")),
                shortcut=str(lab["shortcut"]) if lab.get("shortcut") is not None else None,
                description=str(lab.get("description", "")),
            )
            for lab in raw_labels
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValidationFailed(f"policy: every label needs a key ({exc})") from exc
    for lab in labels:
        if lab.kind not in KINDS:
            raise ValidationFailed(f"policy: label {lab.key!r} has kind {lab.kind!r}; use {KINDS}")
    for what, values in (("key", [lab.key for lab in labels]),
                         ("shortcut", [lab.shortcut for lab in labels if lab.shortcut])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValidationFailed(f"policy: label {what} {twice[0]!r} is used by more than "
                                   f"one label; each label needs its own {what}")
    if sum(1 for lab in labels if lab.kind == "ok") != 1:
        raise ValidationFailed("policy: exactly one label must have kind 'ok'")
    version = data.get("version", 1)
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationFailed(f"policy: version must be a whole number, not {version!r}")
    return Policy(name=str(data.get("name", "policy")), version=version, labels=labels,
                  groups=_parse_groups(data.get("groups"), labels))


@lru_cache
def load_policy(path: str | None = None) -> Policy:
    p = Path(path) if path else DEFAULT_POLICY
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ValidationFailed(f"policy file {p} does not exist") from exc
    except IsADirectoryError as exc:
        raise ValidationFailed(f"policy file {p} is a directory; QUORUM_POLICY_PATH must "
                               "name a YAML file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"cannot read policy file {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationFailed(f"policy file {p} is not valid YAML{where}: {problem}") from exc
    try:
        return parse_policy(data)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{exc.message} (in {p})") from exc


def get_policy() -> Policy:
    from backend.settings import get_settings

    path = get_settings().policy_path
    return load_policy(str(path) if path else None)
