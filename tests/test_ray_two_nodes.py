"""Two Ray nodes that plan differently: two node classes, each replica placed on its own class's node.

Ray's ``cluster_utils.Cluster`` runs two raylets on this one machine, one
offering 2 CPUs and one offering 1, so their probes plan different thread
counts (2 and 1) and form two node classes. `voxfit serve --ray` joins that
cluster by address, as it would join a real one, and must place each class's
replica on its own node with the request its plan made, and relay speech to
both. Loopback only; bounded in time. ``-m 'not ray'`` skips it locally.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ray")
import httpx  # noqa: E402
from serve_helpers import ServerProcess, clean_env  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=60)
        yield cluster
    finally:
        cluster.shutdown()


def test_each_node_class_runs_on_its_own_nodes_with_its_own_plan(two_nodes, tmp_path):
    env = clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache"), RAY_USAGE_STATS_ENABLED="0")
    server = ServerProcess(["--ray", "--ray-address", two_nodes.address, "--port", "0"], env=env, cwd=tmp_path,
                           timeout=240)
    try:
        out = "\n".join(server.stdout)
        assert "node class cpu: 1 node(s)" in out and "node class cpu-2: 1 node(s)" in out, out
        shown = httpx.get(f"{server.url}/v1/plan", timeout=30).json()
        classes = {c["name"]: c for c in shown["node_classes"]}
        replicas = shown["replicas"]
        assert len(replicas) == 2 and len({r["node_id"] for r in replicas}) == 2  # one on each node
        threads = {}
        for r in replicas:
            mine = classes[r["node_class"]]
            assert r["node_id"] in mine["node_ids"]  # placed on its class's node, by the label selector
            assert r["resources"]["CPU"] == mine["request"]["num_cpus"]  # holding what its class's plan asked
            engine = r["voices"]["en_US-joe-medium"]["engine"]
            threads[mine["cpu_share"]] = engine
        assert "2 threads" in threads[2] and "1 thread," in threads[1]  # each planned for its own share
        answered = set()
        body = {"model": "tts-1", "voice": "en_US-joe-medium", "input": "Two nodes.", "response_format": "wav"}
        for _ in range(16):  # bounded: requests are drawn per class by capacity, so both see some
            response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
            assert response.status_code == 200, response.text
            answered.add(response.headers["x-voxfit-replica"])
            if len(answered) == 2:
                break
        assert len(answered) == 2, "one node class answered every request"
    finally:
        assert server.stop() == 0
