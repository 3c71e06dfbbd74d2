"""The core's ranking: hard vetoes with reasons, then score, then a deterministic tie-break."""

from helpers import GiB, cpu_profile, make_settings, piper_spec
from voxfit.engine import EngineInfo
from voxfit.models import AcceleratorDevice, Estimate, Proposal
from voxfit.planning.ranking import rank as core_rank
from voxfit.registry import Registry


def registry(*backends, families=("piper",)):
    reg = Registry()
    for backend in backends:
        reg.add_engine(EngineInfo(backend=backend, families=frozenset(families)), plugin="t")
    return reg


def rank(proposals, model, hardware, settings, reg=None):
    # Every engine the tests use runs piper models unless a test registers otherwise.
    return core_rank(proposals, model, hardware, settings, reg or registry(*{p.engine for p in proposals}))


def p(score=1.0, device="cpu", family="cpu", engine="e", **kw):
    kw.setdefault("plugin", "t")
    return Proposal(device=device, device_family=family, engine=engine, score=score, **kw)


def gpu_hw(free_gib=4.0, source="detected"):
    return cpu_profile(source=source, devices=[
        AcceleratorDevice(id="cpu", family="cpu", name="c"),
        AcceleratorDevice(id="cuda:0", family="cuda", name="g", memory_total_bytes=int(4 * GiB),
                          memory_free_bytes=int(free_gib * GiB)),
    ])


def reasons_of(rejected):
    return {r.proposal.engine: r.reasons for r in rejected}


def test_highest_score_wins():
    feasible, rejected = rank([p(1.0, engine="a"), p(3.0, engine="b"), p(2.0, engine="c")], piper_spec(),
                              cpu_profile(), make_settings())
    assert [x.engine for x in feasible] == ["b", "c", "a"] and rejected == []


def test_ties_break_the_same_way_whatever_the_input_order():
    a, b, c = p(1.0, plugin="zeta"), p(1.0, plugin="alpha", threads=2), p(1.0, plugin="alpha", threads=1)
    orders = {tuple(x.label() for x in rank(order, piper_spec(), cpu_profile(), make_settings())[0])
              for order in ([a, b, c], [c, b, a], [b, a, c])}
    assert orders == {("alpha: e, cpu, fp32, 1 thread", "alpha: e, cpu, fp32, 2 threads", "zeta: e, cpu, fp32")}


def test_device_lock_vetoes_other_families_with_the_reason():
    gpu = p(10.0, device="cuda:0", family="cuda", engine="gpu")
    feasible, rejected = rank([gpu, p(1.0, engine="cpu")], piper_spec(), gpu_hw(), make_settings(device="cpu"))
    assert [x.engine for x in feasible] == ["cpu"]
    assert "device locked to cpu" in reasons_of(rejected)["gpu"][0]


def test_device_memory_that_does_not_fit_with_headroom_is_vetoed():
    # 3.6 GiB needed, 4 GiB free, 15% headroom -> 3.4 GiB usable: vetoed.
    big = p(5.0, device="cuda:0", family="cuda", engine="big", memory_pool="device",
            estimate=Estimate(peak_memory_bytes=int(3.6 * GiB)))
    small = p(4.0, device="cuda:0", family="cuda", engine="small", memory_pool="device",
              estimate=Estimate(peak_memory_bytes=int(3.0 * GiB)))
    feasible, rejected = rank([big, small], piper_spec(), gpu_hw(4.0), make_settings())
    assert [x.engine for x in feasible] == ["small"]
    [reason] = reasons_of(rejected)["big"]
    assert "needs about 3.6 GiB but only 4.0 GiB free on cuda:0" in reason and "15% headroom" in reason


def test_system_memory_is_checked_for_cpu_proposals():
    hog = p(engine="hog", estimate=Estimate(peak_memory_bytes=20 * GiB))
    _, rejected = rank([hog], piper_spec(), cpu_profile(), make_settings())
    assert "of system RAM available" in reasons_of(rejected)["hog"][0]


def test_missing_runtime_is_vetoed_only_for_this_machine():
    needy = p(engine="needy", requires=["a_runtime_that_is_not_installed"])
    _, rejected = rank([needy], piper_spec(), cpu_profile(), make_settings())
    assert "runtime missing: a_runtime_that_is_not_installed" in reasons_of(rejected)["needy"][0]
    # Planning for a saved profile of another machine: what is installed here says nothing.
    feasible, _ = rank([needy], piper_spec(), cpu_profile(source="h100.json"), make_settings())
    assert feasible == [needy]


def test_unsupported_model_family_is_vetoed():
    fish_only = registry("test-fish", families=("fish",))
    _, rejected = rank([p(engine="test-fish")], piper_spec(), cpu_profile(), make_settings(), fish_only)
    assert reasons_of(rejected)["test-fish"] == ["engine test-fish does not run piper models"]


def test_an_engine_nobody_registered_is_vetoed_like_any_other():
    _, rejected = rank([p(engine="ghost-engine")], piper_spec(), cpu_profile(), make_settings(), registry())
    assert reasons_of(rejected)["ghost-engine"] == ["engine 'ghost-engine' is not registered by any installed plugin"]


def test_a_third_party_engine_gets_the_runtime_check_a_builtin_gets():
    reg = Registry()
    reg.add_engine(EngineInfo(backend="vendor", families=frozenset({"piper"}), requires=("vendor_sdk_not_here",),
                              install_hint="pip install vendor-sdk"), plugin="vendor")
    _, rejected = rank([p(engine="vendor")], piper_spec(), cpu_profile(), make_settings(), reg)
    assert reasons_of(rejected)["vendor"] == ["runtime missing: vendor_sdk_not_here not installed (pip install vendor-sdk)"]


def test_plugin_vetoes_are_kept_alongside_the_cores():
    own = p(engine="own", vetoes=["int8 on this device runs 40x slower"], estimate=Estimate(peak_memory_bytes=99 * GiB))
    _, rejected = rank([own], piper_spec(), cpu_profile(), make_settings())
    reasons = reasons_of(rejected)["own"]
    assert reasons[0] == "int8 on this device runs 40x slower" and "system RAM" in reasons[1]


def test_a_device_missing_from_the_profile_is_vetoed():
    ghost = p(device="cuda:3", family="cuda", engine="ghost")
    _, rejected = rank([ghost], piper_spec(), gpu_hw(), make_settings())
    assert "not in the hardware profile" in reasons_of(rejected)["ghost"][0]
