"""`kernel.programs`' reading of tc filters on recorded output (no root); attaching them
needs bpf(2) and is tested in namespaces (tests/dataplane/test_kernel.py)."""

from __future__ import annotations

from recorded_run import Recorded, recorded

from vxtap.dataplane.kernel import programs

SHOW = "tc -j filter show dev vxtap-mk1 ingress"


def test_a_hooks_bpf_filters_by_name_and_program_id() -> None:
    # tc lists the preference's header entry (no options) before the filter itself.
    run = Recorded({SHOW: recorded("tc_mk1.txt")})
    assert programs.read_filters(run, "vxtap-mk1", "ingress") == (("vxtap-mirror-de8b2416", 5000),)


def test_a_hook_without_clsact_or_filters_has_none() -> None:
    refused = Recorded(refused={SHOW: "Error: Cannot find specified qdisc on specified device."})
    assert programs.read_filters(refused, "vxtap-mk1", "ingress") == ()
    assert programs.read_filters(Recorded(), "vxtap-mk1", "ingress") == ()
