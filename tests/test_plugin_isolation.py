"""One plugin's failure never takes the run down; strict mode makes it an error."""

import types

import pytest
from helpers import cpu_profile, make_host, piper_spec
from voxfit import hookimpl
from voxfit.errors import PluginError, PluginUnavailable
from voxfit.models import Detection, Proposal
from voxfit.planning.planner import make_plan


def plugin(**hooks):
    """A plugin module built from hook functions, declaring the current API."""
    module = types.SimpleNamespace(VOXFIT_HOOK_API="2.0")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(**getattr(fn, "_opts", {}))(fn))
    return module


def proposing(score, engine="e", device="cpu", family="cpu", **kw):
    def score_config():
        return [Proposal(device=device, device_family=family, engine=engine, score=score, **kw)]
    return score_config


def raiser(*_args, **_kwargs):
    raise RuntimeError("kaboom\nsecond line never shown")


def status(host, name):
    return next(i for i in host.infos if i.name == name)


def test_import_error_marks_the_plugin_broken_and_keeps_the_rest():
    def load():
        raise ImportError("No module named 'vendor_sdk'")
    host = make_host(("good", plugin(score_config=proposing(1.0))))
    host.add_entry_point("bad", load, "voxfit-bad", "1.2")
    bad = status(host, "bad")
    assert bad.status == "broken" and "vendor_sdk" in bad.error and bad.distribution == "voxfit-bad"
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert plan.chosen.plugin == "good"


def test_missing_optional_dependency_is_a_skip_not_a_break():
    def load():
        raise PluginUnavailable("missing onnxruntime")
    host = make_host()
    host.add_entry_point("ort", load, None, None)
    assert status(host, "ort").status == "skipped"
    assert status(host, "ort").error == "missing onnxruntime"


@pytest.mark.parametrize("api,expected", [
    ("1.0", "upgrade the plugin (docs/writing-a-plugin.md, 'Upgrading from hook API 1.x')"),
    ("3.0", "newer than the core's 2.1: upgrade voxfit"),
    ("2.9", "newer than the core's 2.1: upgrade voxfit"),  # may rely on hooks this core lacks
    ("two", "not a MAJOR.MINOR version"),
    (None, "declares no VOXFIT_HOOK_API"),
])
def test_plugin_for_another_hook_api_is_refused(api, expected):
    module = plugin(score_config=proposing(1.0))
    if api is None:
        del module.VOXFIT_HOOK_API
    else:
        module.VOXFIT_HOOK_API = api
    host = make_host(("old", module), defaults=False)
    info = status(host, "old")
    assert info.status == "refused" and expected in info.error
    assert "old" not in host.active()


def test_misspelled_hook_is_reported_not_ignored():
    module = plugin(score_config=proposing(1.0))
    module.score_confg = hookimpl(lambda: None)
    info = status(make_host(("typo", module)), "typo")
    assert info.status == "broken" and "score_confg" in info.error


def test_raising_hook_loses_only_its_own_contribution():
    host = make_host(("good", plugin(score_config=proposing(1.0))), ("bad", plugin(score_config=raiser)))
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert plan.chosen.plugin == "good"
    [problem] = plan.problems
    assert (problem.plugin, problem.hook) == ("bad", "score_config")
    assert problem.error == "RuntimeError: kaboom"


@pytest.mark.parametrize("bad_result", ["not a list", [{"device": "cpu"}], [42], {"devices": "x"}])
def test_wrong_return_type_is_dropped_and_recorded(bad_result):
    host = make_host(("good", plugin(score_config=proposing(1.0))), ("bad", plugin(score_config=lambda: bad_result)))
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert [p.plugin for p in plan.ranked()] == ["good"]
    assert plan.problems[0].plugin == "bad" and "wrong type" in plan.problems[0].error


def test_core_stamps_the_owner_whatever_the_plugin_claims():
    host = make_host(("honest", plugin(score_config=proposing(1.0, plugin="someone-else"))))
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert plan.chosen.plugin == "honest"


def test_detect_failure_is_isolated():
    host = make_host(("bad", plugin(detect=raiser)),
                     ("good", plugin(detect=lambda: Detection(flags={"seen": True}), score_config=proposing(1.0))))
    from voxfit.planning.planner import detect
    profile = detect(host)
    assert profile.flags["seen"] is True
    assert host.problems[0].hook == "detect"


def _wrapper(fn):
    fn._opts = {"wrapper": True}
    return fn


def test_wrapper_adjusts_other_plugins_proposals():
    @_wrapper
    def score_config():
        proposals = yield
        for p in proposals:
            if p.plugin == "gpu":
                p.score *= 0.1
                p.reasons.append("adjusted by the wrapper")
        return proposals

    host = make_host(("cpu", plugin(score_config=proposing(1.0))),
                     ("gpu", plugin(score_config=proposing(5.0, device="cpu"))),
                     ("adjuster", plugin(score_config=score_config)))
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert plan.chosen.plugin == "cpu"
    gpu = plan.alternatives[0]
    assert gpu.plugin == "gpu" and gpu.score == pytest.approx(0.5) and "adjusted by the wrapper" in gpu.reasons


@pytest.mark.parametrize("where", ["before", "after"])
def test_failing_wrapper_leaves_the_proposals_untouched(where):
    @_wrapper
    def score_config():
        if where == "before":
            raise RuntimeError("early")
        proposals = yield
        proposals.clear()
        raise RuntimeError("late")
        yield

    host = make_host(("cpu", plugin(score_config=proposing(1.0))), ("wrap", plugin(score_config=score_config)))
    plan = make_plan(host, hardware=cpu_profile(), model=piper_spec())
    assert plan.problems[0].plugin == "wrap"
    if where == "before":
        assert plan.chosen.plugin == "cpu"


def test_strict_mode_turns_a_hook_failure_into_an_error():
    host = make_host(("bad", plugin(score_config=raiser)), strict=True)
    with pytest.raises(PluginError, match="plugin 'bad' failed in hook 'score_config': RuntimeError: kaboom"):
        make_plan(host, hardware=cpu_profile(), model=piper_spec())


def test_strict_mode_turns_an_import_error_into_an_error():
    host = make_host(strict=True)
    with pytest.raises(PluginError, match="plugin 'x' broken"):
        host.add_entry_point("x", lambda: (_ for _ in ()).throw(ImportError("nope")), None, None)


def test_blocked_plugin_is_never_imported():
    imported = []
    host = make_host(block_plugins=["cuda"])
    host.add_entry_point("cuda", lambda: imported.append(1), None, None)
    assert status(host, "cuda").status == "blocked" and imported == []


def test_allow_list_blocks_everything_else():
    host = make_host(("a", plugin(score_config=proposing(1.0))), ("b", plugin(score_config=proposing(2.0))),
                     allow_plugins=["a"])
    assert host.active() == ["fish", "a"]  # the core's default plugins stay unless blocked by name
    assert "allow-list" in status(host, "b").error
