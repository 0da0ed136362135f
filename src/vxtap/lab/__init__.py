"""The lab: whole traffic-mirroring scenarios replayed in network namespaces.

`scenario` describes them (pure data), `secgroups` renders security groups as
nftables (pure), `topology` builds the namespaces, `runtime` records what the
lab started, `capture` and `verify` decode and check what the targets saw, and
`lab` ties them together behind `vxtap lab up|verify|down|run`.
"""
