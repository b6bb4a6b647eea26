"""`in_order_of_first_use`: networks and volumes asked for in the order they are needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import parse_config
from supervisor.spec import in_order_of_first_use

DEMO = Path(__file__).parent / "fixtures" / "standin-demo.yaml"


@pytest.mark.parametrize(
    ("networks", "services", "expected"),
    [
        # Config order when nothing tells them apart.
        ("{a: {}, b: {}}", "x: {image: i, networks: [a, b]}", ["a", "b"]),
        # The network of the first start level before one only a later level uses.
        (
            "{late: {}, early: {}}",
            "x: {image: i, networks: [early]}\n  y: {image: i, networks: [late], depends_on: [x]}",
            ["early", "late"],
        ),
        # A network no service joins comes last.
        ("{spare: {}, used: {}}", "x: {image: i, networks: [used]}", ["used", "spare"]),
        # Used early by one service and late by another: early.
        (
            "{b: {}, a: {}}",
            "x: {image: i, networks: [a]}\n"
            "  y: {image: i, networks: [b], depends_on: [x]}\n"
            "  z: {image: i, networks: [a, b], depends_on: [y]}",
            ["a", "b"],
        ),
    ],
)
def test_networks_come_in_order_of_the_start_level_that_first_uses_them(
    networks: str, services: str, expected: list[str]
) -> None:
    stack = parse_config(f"version: 1\nproject: p\nnetworks: {networks}\nservices:\n  {services}\n")
    ordered, _ = in_order_of_first_use(stack, stack.graph().levels())
    assert [n.name for n in ordered] == [f"p-{name}" for name in expected]


def test_the_demo_makes_the_databases_network_and_volumes_first() -> None:
    stack = parse_config(DEMO.read_text())
    networks, volumes = in_order_of_first_use(stack, stack.graph().levels())
    # frontend is declared first but joined only by the last start levels.
    assert [n.name for n in networks] == [
        "ovpn-demo-backend",
        "ovpn-demo-database",
        "ovpn-demo-frontend",
    ]
    assert {v.name for v in volumes} == {
        "ovpn-demo-pgdata-frontend",
        "ovpn-demo-pgdata-ct",
        "ovpn-demo-pki",
    }
