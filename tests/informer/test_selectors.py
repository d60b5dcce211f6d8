import pytest

from app.informer.selectors import FieldSelector, LabelSelector, Op, SelectorError


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "api"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("env in (prod, dev)", {"env": "dev"}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("env notin (prod)", {}, True),
        ("tier", {"tier": ""}, True),
        ("!tier", {"tier": "x"}, False),
        ("app.kubernetes.io/name=web,!canary", {"app.kubernetes.io/name": "web"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector_matches_like_kubernetes(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    assert LabelSelector.parse(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["a=(b", "a in b", "=x", "a,,b", "a b", "env in (prod", "a=b)"])
def test_malformed_label_selector_is_an_error(bad: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(bad)


def test_set_based_terms_keep_their_values() -> None:
    (req,) = LabelSelector.parse("env in (a,b , c)").requirements
    assert req.op is Op.IN and req.values == ("a", "b", "c")


def test_field_selector_supports_name_and_namespace() -> None:
    sel = FieldSelector.parse("metadata.name=web-1,metadata.namespace!=kube-system")
    assert sel.matches("default", "web-1")
    assert not sel.matches("kube-system", "web-1")
    assert not sel.matches("default", "web-2")


@pytest.mark.parametrize("bad", ["spec.nodeName=x", "metadata.name", "metadata.name=(x)"])
def test_unsupported_field_selector_is_an_error(bad: str) -> None:
    with pytest.raises(SelectorError):
        FieldSelector.parse(bad)
