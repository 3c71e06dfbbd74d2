"""A replica's resource request and capacity come from its plan; `voxfit cluster` adds them up per node type."""

import json
import subprocess
from pathlib import Path

import pytest
from fake_pynvml import HARDWARE_DIR
from helpers import make_host, make_settings, voxfit_cli
from test_cuda_plan import cpu_stand_in
from test_fish_spec import write_checkpoint
from voxfit.cluster.requests import cpu_share, replica_capacity, replica_request
from voxfit.errors import NoFeasiblePlan
from voxfit.models import Estimate, HardwareProfile, ModelSpec, Plan, Proposal
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.registry import DeviceFamilyInfo, Registry
from voxfit_cuda import plugin as cuda_plugin

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cluster"


@pytest.fixture(scope="module")
def s1_mini(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("m") / "openaudio-s1-mini")


def installed_plan(profile, **settings):
    host = PluginHost.from_entry_points(make_settings(**settings))
    return host, make_plan(host, hardware_file=HARDWARE_DIR / profile)


def hand_plan(device="npu:0", family="npu", threads=None, rtf=0.5, peak=2**30, pool="system", chosen=True,
              cores=(4, 8)):
    proposal = Proposal(device=device, device_family=family, engine="x", threads=threads, memory_pool=pool,
                        estimate=Estimate(rtf=rtf, peak_memory_bytes=peak), plugin="third")
    hardware = HardwareProfile(os="linux", arch="x86_64", cores_physical=cores[0], cores_logical=cores[1])
    return Plan(model=ModelSpec(family="x", name="m"), hardware=hardware, chosen=proposal if chosen else None,
                summary="nothing fits" if not chosen else "")


# -- replica_request -------------------------------------------------------------


def test_a_cpu_plan_holds_no_gpu_even_on_a_gpu_node():
    host, plan = installed_plan("h100.json")  # the embedded Piper voice: the CPU plugin's proposal wins
    assert plan.chosen.device == "cpu" and plan.chosen.threads == 56
    request = replica_request(plan, host.registry.families)
    assert request.resources == {} and request.num_gpus == 0.0
    # 56 threads, one per physical core, on a node with 2 logical CPUs per core: 112 logical CPUs held.
    assert request.num_cpus == 112.0
    assert request.memory_bytes == plan.chosen.estimate.peak_memory_bytes > 0
    assert request.ray_options() == {"num_cpus": 112.0, "num_gpus": 0.0, "memory": request.memory_bytes}
    assert "cpu family registers no cluster resource" in request.reasons[1]


def test_a_cuda_plan_holds_one_gpu_and_no_system_memory(s1_mini):
    host = make_host(("cuda", cuda_plugin), ("testcpu", cpu_stand_in()), model=str(s1_mini))
    plan = make_plan(host, hardware_file=HARDWARE_DIR / "h100.json")
    assert plan.chosen.device == "cuda:0"
    request = replica_request(plan, host.registry.families)
    assert request.resources == {"GPU": 1.0} and request.num_gpus == 1.0
    assert request.num_cpus == 1.0 and request.memory_bytes is None  # device memory is not Ray's "memory"
    assert request.reasons == [
        "1 CPU: the plan names no thread count for cuda:0; 1 CPU assumed to drive it",
        "1 GPU: the plan chose cuda:0 (cuda family registers resource GPU)",
        "no memory request: the plan's peak ~6.9 GiB is cuda:0's own memory, which the scheduler's memory "
        "resource (system RAM) does not count",
    ]
    assert request.ray_options() == {"num_cpus": 1.0, "num_gpus": 1.0}


def test_the_cuda_plugin_registers_gpu_and_the_core_maps_no_name_itself():
    host = make_host(("cuda", cuda_plugin))
    assert host.registry.families["cuda"].cluster_resource == "GPU"
    assert host.registry.families["cpu"].cluster_resource is None
    # A cuda proposal with families that do not say GPU holds none: the core reads, never guesses.
    plan = hand_plan(device="cuda:0", family="cuda", pool="device")
    assert replica_request(plan, {"cuda": DeviceFamilyInfo(name="cuda")}).resources == {}


def test_a_third_party_family_without_a_resource_needs_no_gpu():
    request = replica_request(hand_plan(threads=2), {"npu": DeviceFamilyInfo(name="npu", plugin="third")})
    assert request.resources == {} and request.num_gpus == 0.0
    assert request.num_cpus == 4.0  # 2 threads x 2 logical CPUs per core: no accelerator to hold
    assert request.memory_bytes == 2**30


def test_a_third_party_resource_goes_among_custom_resources():
    families = {"npu": DeviceFamilyInfo(name="npu", cluster_resource="NPU")}
    request = replica_request(hand_plan(threads=2, pool="device"), families)
    assert request.ray_options() == {"num_cpus": 2.0, "num_gpus": 0.0, "resources": {"NPU": 1.0}}
    assert request.reasons[0] == "2 CPUs: the plan runs 2 intra-op threads"  # threads drive the NPU: no siblings


def test_an_unregistered_family_is_said_to_be_unregistered():
    request = replica_request(hand_plan(), {})
    assert request.resources == {} and "no installed plugin registers the npu family" in request.reasons[1]


def test_slots_multiply_cpus_and_system_memory():
    request = replica_request(hand_plan(threads=3, cores=(8, 8)), {"npu": DeviceFamilyInfo(name="npu")}, slots=2)
    assert (request.num_cpus, request.memory_bytes) == (6.0, 2 * 2**30)
    assert request.reasons[0] == "6 CPUs: the plan runs 3 intra-op threads in each of 2 slots"
    assert request.reasons[2] == "memory 2.0 GiB: the plan's peak estimate in system RAM x 2 slots"


def test_no_request_for_a_plan_that_chose_nothing():
    with pytest.raises(NoFeasiblePlan, match="the plan chose nothing"):
        replica_request(hand_plan(chosen=False), {})


def test_a_blank_cluster_resource_is_refused_at_registration():
    with pytest.raises(ValueError, match="cluster_resource ' GPU' must be None or a resource name"):
        Registry().add_family(DeviceFamilyInfo(name="npu", cluster_resource=" GPU"))


# -- capacity and shares -----------------------------------------------------------


def test_capacity_is_slots_over_rtf():
    assert replica_capacity(hand_plan(rtf=0.25)) == 4.0
    assert replica_capacity(hand_plan(rtf=0.25), slots=3) == 12.0
    assert replica_capacity(hand_plan(rtf=None)) is None
    assert replica_capacity(hand_plan(chosen=False)) is None
    with pytest.raises(ValueError):
        replica_capacity(hand_plan(), slots=0)


def test_cpu_share_splits_evenly_and_never_below_one():
    assert cpu_share(112, 3) == 37
    assert cpu_share(8, 2) == 4
    assert cpu_share(2, 4) == 1
    with pytest.raises(ValueError):
        cpu_share(8, 0)


# -- voxfit cluster ---------------------------------------------------------------------


def cluster_json(*args):
    result = voxfit_cli("cluster", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cluster_of_four_node_types(s1_mini):
    docs = {name: str(DOCS / f"{name}-node.json") for name in ("h100", "rtx3060", "laptop-4gb", "cpu-8core")}
    out = cluster_json(docs["h100"] + "*2", docs["rtx3060"] + "*4", docs["laptop-4gb"], docs["cpu-8core"] + "*3",
                       "--model", str(s1_mini))
    h100, rtx3060, laptop, cpu = out["nodes"]
    assert (h100["count"], h100["device"], h100["request"]["num_gpus"]) == (2, "cuda:0", 1.0)
    assert h100["ray_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert h100["capacity"] == pytest.approx(2 / h100["rtf"], abs=1e-3)
    assert (rtx3060["count"], rtx3060["device"]) == (4, "cuda:0")
    # The 4 GB laptop GPU cannot hold S1-mini: its replica runs on the CPU and holds no GPU.
    assert laptop["device"] == "cpu" and laptop["request"]["num_gpus"] == 0.0
    assert laptop["request"]["memory_bytes"] > 7 * 2**30
    assert cpu["device"] == "cpu" and cpu["request"]["num_cpus"] == 7.0  # physical cores less one (fish on CPU)
    total = sum(n["capacity_per_replica"] * n["replicas_per_node"] * n["count"] for n in out["nodes"])
    assert out["total"]["audio_seconds_per_second"] == pytest.approx(total, abs=2e-3)
    assert out["total"] == {**out["total"], "nodes": 10, "replicas": 10}


def test_plan_for_a_node_type_is_the_plan_command_s(s1_mini):
    profile = str(HARDWARE_DIR / "rtx3060.json")
    plan = json.loads(voxfit_cli("plan", "--hardware", profile, "--model", str(s1_mini), "--json").stdout)
    node = cluster_json(profile, "--model", str(s1_mini))["nodes"][0]
    assert node["rtf"] == plan["chosen"]["estimate"]["rtf"] and node["device"] == plan["chosen"]["device"]


def test_replicas_share_the_cpus_and_a_single_gpu_holds_one_replica(s1_mini):
    out = cluster_json(str(DOCS / "cpu-8core-node.json"), str(HARDWARE_DIR / "h100.json"), "--replicas-per-node", "2")
    cpu, h100 = out["nodes"]
    assert cpu["cpu_budget"] == 4 and cpu["request"]["num_cpus"] == 4.0 and cpu["replicas_per_node"] == 2
    assert "4" in cpu["chosen"] and cpu["chosen"].count("4 threads") == 1
    assert h100["cpu_budget"] == 56 and h100["replicas_per_node"] == 2  # Piper on the CPU: no GPU to run out of
    gpu = cluster_json(str(HARDWARE_DIR / "h100.json"), "--model", str(s1_mini), "--replicas-per-node", "2")
    node = gpu["nodes"][0]
    assert node["replicas_per_node"] == 1
    assert "only 1 of 2 replicas fit on one node: the node has 1 device giving GPU" in node["notes"][1]


def test_a_node_whose_plan_fails_counts_zero_with_its_reason(tmp_path, s1_mini):
    small = json.loads((DOCS / "cpu-8core-node.json").read_text())
    small["memory_available_bytes"] = small["devices"][0]["memory_free_bytes"] = 2**30
    (tmp_path / "small.json").write_text(json.dumps(small))
    out = cluster_json(str(tmp_path / "small.json") + "*5", str(DOCS / "h100-node.json"), "--model", str(s1_mini))
    small_node, h100 = out["nodes"]
    assert small_node["failure"].startswith("the plan chose nothing: all ") and small_node["capacity"] == 0.0
    assert out["total"]["audio_seconds_per_second"] == h100["capacity"] > 0
    text = voxfit_cli("cluster", str(tmp_path / "small.json"), "--model", str(s1_mini)).stdout.decode()
    assert "  FAILED: the plan chose nothing: all " in text and "(counted as 0)" in text


def test_the_text_output_shows_the_request_and_its_reasons():
    text = voxfit_cli("cluster", str(DOCS / "cpu-8core-node.json") + "*3").stdout.decode()
    assert "x 3 nodes: AMD EPYC" in text
    assert "  request:  8 CPUs, memory 0.56 GiB" in text
    assert "    - 8 CPUs: the plan runs 8 intra-op threads" in text
    assert "Cluster:  3 nodes, 3 replicas, ~" in text


@pytest.mark.parametrize(("args", "error"), [
    (["missing.json"], "error: hardware profile not found: missing.json"),
    ([str(HARDWARE_DIR / "h100.json") + "*0"], "bad node count in"),
    ([str(HARDWARE_DIR / "h100.json") + "*two"], "write PROFILE*N with N a whole number of nodes >= 1"),
    ([str(HARDWARE_DIR / "h100.json"), "--replicas-per-node", "0"], "--replicas-per-node must be at least 1, got 0"),
])
def test_mistakes_are_one_line(args, error):
    result = voxfit_cli("cluster", *args)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.count("\n") == 1 and error in stderr and not result.stdout


def test_a_corrupt_profile_stops_before_any_plan(tmp_path):
    (tmp_path / "bad.json").write_text('{"os": "linux", "cores_logical": ')
    result = voxfit_cli("cluster", str(HARDWARE_DIR / "h100.json"), str(tmp_path / "bad.json"))
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.decode().startswith(f"error: hardware profile {tmp_path / 'bad.json'} is not valid JSON")


def test_the_same_profile_twice_adds_its_counts():
    out = cluster_json(str(HARDWARE_DIR / "rtx3060.json") + "*2", str(HARDWARE_DIR / "rtx3060.json"))
    assert [n["count"] for n in out["nodes"]] == [3]


# -- docs/cluster ---------------------------------------------------------------------


def test_docs_node_profiles_are_the_test_fixtures():
    for doc, fixture in (("h100-node", "h100"), ("rtx3060-node", "rtx3060"), ("laptop-4gb-node", "rtx3050-laptop")):
        assert (DOCS / f"{doc}.json").read_text() == (HARDWARE_DIR / f"{fixture}.json").read_text()


def test_the_docs_script_makes_an_s1_mini_shape_that_plans_like_the_test_one(tmp_path, s1_mini):
    subprocess.run([str(DOCS / "make-s1-mini-shape.sh"), str(tmp_path / "openaudio-s1-mini")], check=True,
                   capture_output=True)
    ours = cluster_json(str(DOCS / "h100-node.json"), "--model", str(tmp_path / "openaudio-s1-mini"))
    theirs = cluster_json(str(DOCS / "h100-node.json"), "--model", str(s1_mini))
    assert ours["nodes"][0]["rtf"] == theirs["nodes"][0]["rtf"] and ours["nodes"][0]["device"] == "cuda:0"
