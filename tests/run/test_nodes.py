"""A cluster's nodes: join tokens, what kiln nodes shows, and finding the node to drain."""

import pytest

from kiln.errors import InvalidInput, KilnError, NotFound
from kiln.run.nodes import JoinToken, find_node, join_token, node_statuses
from kiln.run.serve_api import AppState, ReplicaState
from kiln.run.serve_config import FRONT
from kiln.settings import Settings


def test_a_join_token_carries_what_a_node_needs_and_nothing_else_passes_for_one(
    settings: Settings,
) -> None:
    with pytest.raises(KilnError, match="kiln up --cluster"):
        join_token(settings)  # a loopback head has nothing to join
    head = settings.model_copy(update={"cluster_address": "10.0.0.5"})
    token = join_token(head)
    assert token.gcs == f"10.0.0.5:{head.ray_port}" and token.ray_token and token.secret_key
    assert JoinToken.decode(token.encode()) == token
    for bad in ["", "hello", "kiln-join-%%%", "kiln-join-" + "e30"]:  # e30 is {}
        with pytest.raises(InvalidInput, match="not a Kiln join token"):
            JoinToken.decode(bad)


STATE = [
    {"node_id": "a" * 56, "node_ip": "10.0.0.5", "node_name": "head", "is_head_node": True,
     "state": "ALIVE", "resources_total": {"CPU": 8}},
    {"node_id": "b" * 56, "node_ip": "10.0.0.6", "node_name": "gpu-1", "state": "ALIVE",
     "resources_total": {"CPU": 16, "GPU": 2, "accelerator_type:H100": 1}},
    {"node_id": "c" * 56, "node_ip": "10.0.0.7", "node_name": "gone", "state": "DEAD",
     "resources_total": {"CPU": 4}},
]  # fmt: skip


def test_nodes_show_what_their_dynos_reserve() -> None:
    apps = {
        "chat": AppState(name="chat", status="RUNNING", replica_cpus=1, replica_gpus=1, replicas=[
            ReplicaState(replica_id="r1abcdef", state="RUNNING", node_id="b" * 56),
            ReplicaState(replica_id="r2abcdef", state="RUNNING", node_id="b" * 56),
            ReplicaState(replica_id="r3abcdef", state="STOPPING", node_id="b" * 56),
        ]),
        FRONT: AppState(name=FRONT, status="RUNNING", replicas=[
            ReplicaState(replica_id="f1abcdef", state="RUNNING", node_id="a" * 56),
        ]),
    }  # fmt: skip
    nodes = node_statuses(STATE, apps, draining={"b" * 56})
    assert [(n.name, n.state) for n in nodes] == [
        ("head", "ALIVE"), ("gpu-1", "DRAINING"), ("gone", "DEAD"),
    ]  # fmt: skip
    gpu = nodes[1]
    assert (gpu.gpus_used, gpu.gpus, gpu.cpus_used, gpu.accelerator) == (2, 2, 2, "H100")
    assert gpu.dynos == ["chat/r1abcd", "chat/r2abcd"]
    assert nodes[0].dynos == [] and nodes[0].cpus_used == 0  # the platform's front is no dyno


def test_a_node_is_found_by_name_address_or_id_and_never_a_dead_one() -> None:
    nodes = node_statuses(STATE, {}, set())
    assert find_node(nodes, "gpu-1").address == "10.0.0.6"
    assert find_node(nodes, "10.0.0.5").name == "head"
    assert find_node(nodes, "bbbbbbbb").name == "gpu-1"
    with pytest.raises(NotFound, match="no node is 'gone'; the cluster has: head"):
        find_node(nodes, "gone")
