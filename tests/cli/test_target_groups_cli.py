"""`vxtap target-group ...` and elb sessions in `vxtap session`, against a real server."""

from __future__ import annotations

import uuid

from test_resources import Cli, cli, client  # noqa: F401  (fixtures)


def test_target_groups_and_elb_sessions(cli: Cli) -> None:  # noqa: F811
    host = f"col-{uuid.uuid4().hex[:6]}"
    src = f"src-{uuid.uuid4().hex[:6]}"
    for device, ip in (("eth0", "10.5.0.1"), ("eth1", "10.5.0.2"), ("eth2", "10.5.0.3")):
        cli.json("port", "create", "--host", host, "--device", device, "--ip", ip)
    source = cli.json("port", "create", "--host", src, "--device", "eth0", "--ip", "10.6.0.1")
    group = cli.json(
        "target-group", "create", "ids", "--member", f"{host}/eth0", "--member", f"{host}/eth1"
    )
    gid = group["id"]
    assert [m["number"] for m in group["members"]] == [0, 1]
    shown = cli.ok("target-group", "show", gid)
    assert f"{host}/eth0" in shown and "never" in shown and "NUMBER" in shown
    added = cli.json("target-group", "add-members", gid, f"{host}/eth2")
    assert [m["number"] for m in added["members"]] == [0, 1, 2]
    removed = cli.json("target-group", "remove-members", gid, f"{host}/eth0")
    assert [m["number"] for m in removed["members"]] == [1, 2]
    assert gid in cli.ok("target-group", "list")
    assert gid in [g["id"] for g in cli.json("target-group", "list", "--name", "ids")]
    filter_id = cli.json("filter", "create", "f")["id"]
    session = cli.json(
        "session", "create", "to-ids", "--filter", filter_id, "--source", source["id"],
        "--target-group", gid, "--priority", "1",
    )  # fmt: skip
    assert (session["traffic_mirror_target_type"], session["traffic_mirror_target_id"]) == (
        "elb",
        gid,
    )
    # show and list name the group.
    shown = cli.ok("session", "show", session["id"])
    assert f"group ids ({gid})" in shown
    assert "group ids" in cli.ok("session", "list", "--name", "to-ids")
    # Refusals: one line each, nothing changed.
    line = cli.fails("target-group", "delete", gid)
    assert "target of session" in line
    line = cli.fails(
        "session", "create", "x", "--filter", filter_id, "--source", source["id"],
        "--target", f"{host}/eth0", "--target-group", gid, "--priority", "2",
    )  # fmt: skip
    assert "not both" in line
    assert cli.fails("target-group", "add-members", gid, source["id"])
    assert [m["number"] for m in cli.json("target-group", "show", gid)["members"]] == [1, 2]
    # Back to a port, then the group can go.
    moved = cli.json("session", "update", session["id"], "--target", f"{host}/eth0")
    assert moved["traffic_mirror_target_type"] == "eni"
    cli.ok("target-group", "delete", gid)
    assert "no such target group" in cli.fails("target-group", "show", gid)
