"""The Ray deployment's parts that need no cluster: the in-process relay, node classes, replica settings."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ray")  # the ray extra; `make setup` installs it

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from voxfit.cluster.requests import ReplicaRequest  # noqa: E402
from voxfit.errors import UsageError  # noqa: E402
from voxfit.server.ray_serve.asgi_call import ForwardedRequest, ResponseStart, call_app  # noqa: E402
from voxfit.server.ray_serve.nodes import group, parse_autoscale  # noqa: E402
from voxfit.server.ray_serve.replica import replica_settings  # noqa: E402
from voxfit.settings import Settings  # noqa: E402


def toy_app(seen: dict) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"body": (await request.body()).decode(), "q": request.url.query,
                "auth": request.headers.get("authorization")}

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def pieces():
            try:
                for i in range(1000):
                    yield f"piece {i};".encode()
                    await asyncio.sleep(0.01)
            finally:
                seen["disconnected"] = await request.is_disconnected()
                seen["ended_at"] = i
        return StreamingResponse(pieces(), media_type="text/plain")

    return app


async def collect(app: FastAPI, request: ForwardedRequest, keep: int = 10**6) -> list:
    out = []
    gen = call_app(app, request)
    async for piece in gen:
        out.append(piece)
        if len(out) >= keep:
            await gen.aclose()
            break
    return out


def test_a_request_runs_through_the_app_with_its_body_query_and_headers():
    request = ForwardedRequest("POST", "/echo", b"x=1", ((b"authorization", b"Bearer k"),), b"hello")
    pieces = asyncio.run(collect(toy_app({}), request))
    assert isinstance(pieces[0], ResponseStart) and pieces[0].status == 200
    assert (b"content-type", b"application/json") in pieces[0].headers
    assert b"".join(pieces[1:]) == b'{"body":"hello","q":"x=1","auth":"Bearer k"}'


def test_an_unknown_route_is_the_apps_own_404():
    pieces = asyncio.run(collect(toy_app({}), ForwardedRequest("GET", "/nowhere")))
    assert pieces[0].status == 404


def test_a_stream_comes_in_pieces_and_a_reader_that_leaves_is_a_disconnect_for_the_app():
    seen: dict = {}

    async def scenario() -> list:
        pieces = await collect(toy_app(seen), ForwardedRequest("GET", "/stream"), keep=4)
        await asyncio.sleep(0.2)  # the app notices at its next piece
        return pieces

    pieces = asyncio.run(scenario())
    assert pieces[1:] == [b"piece 0;", b"piece 1;", b"piece 2;"]  # each chunk as the app sent it
    assert seen["disconnected"] is True
    assert seen["ended_at"] < 100  # stopped, not run to its 1000th piece


def probe(label: str, family: str, cpus: float, gpus: float = 0, capacity: float = 10.0) -> dict:
    resources = {"GPU": gpus} if gpus else {}
    return {"hostname": "h", "voices": {"v": {
        "plan": {"x": 1}, "label": label, "device": f"{family}:0" if gpus else "cpu", "family": family,
        "request": ReplicaRequest(num_cpus=cpus, resources=resources, memory_bytes=10**8,
                                  reasons=[f"{cpus:g} CPU: because"]),
        "capacity": capacity}}}


def test_nodes_that_plan_alike_form_one_class_and_a_gpu_node_another():
    probes = [("n1", "cpu-a", 4, probe("piper cpu", "cpu", 4)),
              ("n2", "gpu-a", 4, probe("fish cuda", "cuda", 1, gpus=1)),
              ("n3", "cpu-b", 4, probe("piper cpu", "cpu", 4))]
    classes = group(probes, replicas_per_node=2, autoscale=None)
    assert [c.name for c in classes] == ["cpu", "cuda"]
    cpu, gpu = classes
    assert cpu.node_ids == ["n1", "n3"] and cpu.replicas == 4
    cpu_options, gpu_options = cpu.actor_options(), gpu.actor_options()
    assert cpu_options["num_gpus"] == 0 and cpu_options["num_cpus"] == 4  # a CPU plan holds no GPU
    assert cpu_options["label_selector"] == {"ray.io/node-id": "in(n1,n3)"}
    assert gpu_options["num_gpus"] == 1 and gpu_options["label_selector"] == {"ray.io/node-id": "in(n2)"}
    assert "resources" not in gpu_options  # the GPU is num_gpus, not a custom resource
    assert any("holds 1 CPU: because" in line for line in gpu.describe())


def test_the_same_plan_with_a_different_cpu_share_is_another_class():
    classes = group([("n1", "a", 2, probe("p", "cpu", 2)), ("n2", "b", 8, probe("p", "cpu", 2))], 1, None)
    assert len(classes) == 2 and classes[1].name == "cpu-2"


@pytest.mark.parametrize("text, expected", [("1:4", (1, 4)), ("0:2", (0, 2)), (None, None)])
def test_autoscale_bounds(text, expected):
    assert parse_autoscale(text) == expected


@pytest.mark.parametrize("text", ["4:1", "0:0", "x:2", "3"])
def test_bad_autoscale_bounds_are_one_line(text):
    with pytest.raises(UsageError, match="MIN:MAX"):
        parse_autoscale(text)


def test_a_replica_plans_within_what_ray_gave_it():
    base = Settings(device="auto", port=8000, max_queue=8)
    mine = replica_settings(base, {"CPU": 1.0, "memory": 1e8}, "cpu", ongoing=2)
    assert (mine.cpu_budget, mine.device, mine.max_queue, mine.port) == (1, "cpu", 2, 0)
    assert replica_settings(base, {"CPU": 0.5, "GPU": 1.0}, "cuda", 1).cpu_budget == 1  # never zero


def node_class(autoscale=None):
    (only,) = group([("n1", "a", 2, probe("piper cpu", "cpu", 1))], replicas_per_node=2, autoscale=autoscale)
    return only


def deployment_config(app):
    return app._bound_deployment._deployment_config


def test_each_node_class_is_a_deployment_with_rays_limits_from_the_settings():
    from voxfit.server.ray_serve.launch import deployments

    settings = Settings(max_queue=3, workers_per_engine=1, drain_timeout=7)
    router = deployments(settings, [node_class()])
    (backend,) = router._bound_deployment.init_kwargs.values()
    config = deployment_config(backend)
    assert (config.num_replicas, config.max_ongoing_requests, config.max_queued_requests) == (2, 1, 3)
    assert config.graceful_shutdown_timeout_s == 7
    options = backend._bound_deployment.ray_actor_options
    assert options["num_cpus"] == 1 and options["num_gpus"] == 0


def test_autoscaling_scales_each_class_on_rays_queue():
    from voxfit.server.ray_serve.launch import deployments

    router = deployments(Settings(), [node_class(autoscale=(1, 3))])
    (backend,) = router._bound_deployment.init_kwargs.values()
    scaling = deployment_config(backend).autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 3, 1)


class _Directory:
    def __init__(self) -> None:
        self.touched: list = []

    class _Method:
        def __init__(self, log: list) -> None:
            self.log = log

        def remote(self, *args):
            self.log.append(args)

    @property
    def touch(self):
        return self._Method(self.touched)


class _Pool:
    def __init__(self, dead):
        self.dead_reason = dead


def test_a_replica_whose_engine_died_fails_its_health_check_so_ray_replaces_it():
    from voxfit.server.ray_serve.replica import VoiceReplica

    replica = object.__new__(VoiceReplica)  # the health check alone: no engine, no cluster
    replica.id, replica.directory = "r1", _Directory()
    replica.state = type("S", (), {"pools": {"v": _Pool(None)}, "close": lambda self: None})()
    asyncio.run(replica.check_health())
    replica.state.pools["v"] = _Pool("engine crashed: RuntimeError: boom")
    with pytest.raises(RuntimeError, match="voice v is out of service: engine crashed"):
        asyncio.run(replica.check_health())
    assert replica.directory.touched == [("r1", True, []), ("r1", False, ["voice v is out of service: "
                                                                         "engine crashed: RuntimeError: boom"])]


@pytest.mark.parametrize("args, message", [
    (["--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--ray-address", "nonsense"], "expected HOST:PORT, ray://HOST:PORT, auto or local"),
    (["--autoscale", "3:1"], "--autoscale '3:1': expected MIN:MAX"),
    (["--replicas", "0"], "replicas"),
    (["--wyoming", "tcp://127.0.0.1:0"], "--wyoming is not served through Ray"),
    (["--model", "/nowhere/voice.onnx"], "model not found: /nowhere/voice.onnx"),
])
def test_bad_ray_options_are_one_line_before_ray_starts(args, message):
    from helpers import voxfit_cli

    result = voxfit_cli("serve", "--ray", *args, timeout=60)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert "Started a local Ray instance" not in result.stderr.decode()


def test_without_the_ray_extra_serve_ray_says_what_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['voxfit', 'serve', '--ray']\n"
            "from voxfit.cli import run; run()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: voxfit serve --ray needs the ray extra (ray is missing): pip install 'voxfit[ray]'"]
