"""The hook contracts themselves: names, signatures and documented promises."""

import inspect

import pytest
from voxfit import hookspecs
from voxfit.plugins import HOOK_NAMES

EXPECTED = {
    "register_engines": ["register"],
    "register_device_families": ["register"],
    "resolve_model": ["reference", "settings"],
    "default_model": ["settings"],
    "plan_inputs": ["settings"],
    "detect": ["host", "settings"],
    "score_config": ["model", "hardware", "settings", "engines"],
    "prepare_env": ["proposal", "hardware", "settings"],
    "load_engine": ["proposal", "model", "settings", "engines"],
    "disable_training_artifacts": ["engine"],
}


def test_exactly_the_documented_hooks_exist():
    assert sorted(HOOK_NAMES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_hook_is_a_documented_contract(name):
    fn = getattr(hookspecs, name)
    assert list(inspect.signature(fn).parameters) == EXPECTED[name]
    doc = inspect.getdoc(fn) or ""
    # Each contract says when it is called, what to return and what never to do.
    assert "Called" in doc, f"{name}: when is it called?"
    assert ":return:" in doc, f"{name}: what does it return?"
    assert "Never" in doc or "never" in doc or "Must" in doc, f"{name}: what must it never do?"


def test_only_the_answering_hooks_take_the_first_result():
    first = {n for n in EXPECTED if getattr(hookspecs, n).voxfit_spec.get("firstresult")}
    assert first == {"load_engine", "resolve_model", "default_model"}


def test_hook_api_version_is_major_dot_minor():
    major, minor = hookspecs.HOOK_API_VERSION.split(".")
    assert major.isdigit() and minor.isdigit()
