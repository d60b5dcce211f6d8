"""Kubernetes label and field selectors: parsing and matching, free of SQL.

Label selector syntax (as kubectl): `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
`a` (exists), `!a` (does not exist), joined by commas (AND). `!=` and `notin` also match
objects without the label, as in Kubernetes.

Field selectors support `metadata.name` and `metadata.namespace` with `=`, `==` and `!=`.

Limits, so a selector can never cost much to parse, match or turn into SQL: at most
`MAX_SELECTOR_CHARS` characters, `MAX_TERMS` terms and `MAX_SET_VALUES` values in one
`in`/`notin` set. Beyond them parsing fails (a 400 at the API) before any work is done.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

MAX_SELECTOR_CHARS = 2048
MAX_TERMS = 32
MAX_SET_VALUES = 100


def _pattern() -> tuple[str, str]:
    """Regular expressions of what `LabelSelector.parse` and `FieldSelector.parse` accept
    (within the limits), for the OpenAPI document: clients and fuzzers learn the grammar."""
    name = r"[a-z0-9A-Z](?:[a-z0-9A-Z_.-]{0,61}[a-z0-9A-Z])?"
    key = rf"(?:[a-z0-9A-Z.-]{{1,252}}/)?{name}"
    value = rf"(?:{name})?"
    term = (
        rf"\s*(?:{key}\s*(?:==|=|!=)\s*{value}|{key}\s+(?:in|notin)\s*\("
        rf"\s*{value}(?:\s*,\s*{value}){{0,{MAX_SET_VALUES - 1}}}\s*\)|!?\s*{key})\s*"
    )
    field = r"\s*metadata\.(?:name|namespace)\s*(?:==|=|!=)\s*[^\s!=(),]*\s*"
    terms = MAX_TERMS - 1
    return (
        rf"^(?:\s*|{term}(?:,{term}){{0,{terms}}})$",
        rf"^(?:\s*|{field}(?:,{field}){{0,{terms}}})$",
    )


class SelectorError(ValueError):
    """A selector that does not parse; the message says where and why."""


class Op(StrEnum):
    EQ = "="
    NE = "!="
    IN = "in"
    NOTIN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.op:
            case Op.EQ | Op.IN:
                return value is not None and value in self.values
            case Op.NE | Op.NOTIN:
                return value is None or value not in self.values
            case Op.EXISTS:
                return value is not None
            case Op.NOT_EXISTS:
                return value is None
        return False  # pragma: no cover


_KEY = r"(?:[a-z0-9A-Z.-]+/)?[a-z0-9A-Z]([a-z0-9A-Z_.-]*[a-z0-9A-Z])?"
_VALUE = r"(?:[a-z0-9A-Z]([a-z0-9A-Z_.-]*[a-z0-9A-Z])?)?"
_KEY_RE = re.compile(f"^{_KEY}$")
_VALUE_RE = re.compile(f"^{_VALUE}$")
_SET_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_CMP_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=()]*)$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (within the limits above)."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectorError(
            f"selector is {len(text)} characters; the limit is {MAX_SELECTOR_CHARS}"
        )
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' at position {i}")
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError("unbalanced '('")
    terms.append(text[start:])
    if len(terms) > MAX_TERMS:
        raise SelectorError(f"selector has {len(terms)} terms; the limit is {MAX_TERMS}")
    return [t.strip() for t in terms]


def _key(key: str) -> str:
    if len(key) > 316 or not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _requirement(term: str) -> Requirement:
    if not term:
        raise SelectorError("empty term in selector")
    if m := _SET_RE.match(term):
        raw = m["values"].split(",")
        if len(raw) > MAX_SET_VALUES:
            raise SelectorError(f"a set has {len(raw)} values; the limit is {MAX_SET_VALUES}")
        values = tuple(_value(v.strip()) for v in raw)
        return Requirement(_key(m["key"]), Op.IN if m["op"] == "in" else Op.NOTIN, values)
    if m := _CMP_RE.match(term):
        op = Op.NE if m["op"] == "!=" else Op.EQ
        return Requirement(_key(m["key"]), op, (_value(m["value"]),))
    if term.startswith("!"):
        return Requirement(_key(term[1:].strip()), Op.NOT_EXISTS)
    return Requirement(_key(term), Op.EXISTS)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if text is None or not text.strip():
            return cls()
        return cls(tuple(_requirement(t) for t in _split_terms(text)))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def canonical(self) -> str:
        """The selector written one way (terms and set values sorted), so two spellings of
        one selector compare equal."""
        return ",".join(sorted(_written(r) for r in self.requirements))

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _written(req: Requirement) -> str:
    match req.op:
        case Op.EQ:
            return f"{req.key}={req.values[0]}" if len(req.values) == 1 else _set(req, "in")
        case Op.NE:
            return f"{req.key}!={req.values[0]}"
        case Op.IN:
            return _set(req, "in")
        case Op.NOTIN:
            return _set(req, "notin")
        case Op.EXISTS:
            return req.key
    return f"!{req.key}"


def _set(req: Requirement, op: str) -> str:
    return f"{req.key} {op} ({','.join(sorted(set(req.values)))})"


FIELDS = ("metadata.name", "metadata.namespace")
LABEL_SELECTOR_PATTERN, FIELD_SELECTOR_PATTERN = _pattern()


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if text is None or not text.strip():
            return cls()
        reqs = []
        for term in _split_terms(text):
            m = _CMP_RE.match(term)
            if not m:
                raise SelectorError(f"field selector term {term!r} must be field=value or !=")
            if m["key"] not in FIELDS:
                raise SelectorError(f"unsupported field {m['key']!r}; supported: {FIELDS}")
            reqs.append(FieldRequirement(m["key"], m["op"] != "!=", m["value"]))
        return cls(tuple(reqs))

    def matches(self, namespace: str, name: str) -> bool:
        for r in self.requirements:
            actual = name if r.field == "metadata.name" else namespace
            if (actual == r.value) != r.equal:
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.requirements)
