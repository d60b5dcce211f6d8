"""Roles, scopes and token requests, alone."""

from __future__ import annotations

import re

import pytest

from app.access.roles import ClusterScope, Principal, Role, check_principal_name
from app.access.tokens import EXPIRY_PATTERN, TokenRequest, parse_duration
from app.informer.selectors import (
    FIELD_SELECTOR_PATTERN,
    LABEL_SELECTOR_PATTERN,
    FieldSelector,
    LabelSelector,
    SelectorError,
)


def test_roles_order_and_parse() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR and str(Role.ADMIN) == "admin"
    with pytest.raises(ValueError, match="unknown role"):
        Role.parse("root")


def test_scopes_compare_by_their_canonical_text() -> None:
    a = ClusterScope.parse("region=eu, env in (dev,qa)")
    b = ClusterScope.parse("env in (qa,dev),region=eu")
    assert a == b and a.text == "env in (dev,qa),region=eu"
    assert a.admits({"env": "qa", "region": "eu"}) and not a.admits({"env": "prod"})
    assert not a.admits(None)  # an unknown cluster is out of a scope
    assert ClusterScope.parse("").everything and ClusterScope.parse("").admits(None)
    assert a.within(a) and a.within(ClusterScope()) and not ClusterScope().within(a)


def test_nobody_grants_more_than_they_have() -> None:
    dev_admin = Principal("d", Role.ADMIN, ClusterScope.parse("env=dev"))
    assert TokenRequest.parse("x", "viewer", "env=dev", "30d").grantable_by(dev_admin)
    assert not TokenRequest.parse("x", "viewer", "", "never").grantable_by(dev_admin)
    operator = Principal("o", Role.OPERATOR)
    assert not TokenRequest.parse("x", "admin", "", "never").grantable_by(operator)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("never", None)],
)
def test_durations(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds
    assert re.match(EXPIRY_PATTERN, text)


def test_bad_names_and_durations() -> None:
    for bad in ("", "-x", "a b", "x" * 64):
        with pytest.raises(ValueError):
            check_principal_name(bad)
    for bad in ("30", "1y", "9999999d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "a=b",
        "a==b,c!=d",
        "x in (a,b)",
        "x notin ()",
        "!x",
        "x",
        "k8s.io/app=web",
        "a=b,,c",
        "a in (",
        "a=b c",
        "-a=b",
        "a=" + "v" * 64,
        ",".join(f"k{i}" for i in range(33)),
    ],
)
def test_the_selector_pattern_agrees_with_the_parser(text: str) -> None:
    try:
        LabelSelector.parse(text)
        parses = True
    except SelectorError:
        parses = False
    assert bool(re.match(LABEL_SELECTOR_PATTERN, text)) == parses


@pytest.mark.parametrize(
    "text", ["metadata.name=x", "metadata.namespace!=a,metadata.name==b", "spec.x=1", "a"]
)
def test_the_field_selector_pattern_agrees_with_the_parser(text: str) -> None:
    try:
        FieldSelector.parse(text)
        parses = True
    except SelectorError:
        parses = False
    assert bool(re.match(FIELD_SELECTOR_PATTERN, text)) == parses
