"""The data plane: compile the desired state into a kernel plan, and make the kernel show it.

`plan` is pure (no I/O): `PlanCompiler().compile(DesiredState) -> KernelPlan`.
`bpf` hand-assembles the one eBPF program and wraps the bpf(2) calls it needs.
`diff` is pure too: where a snapshot of the kernel differs from a plan.
`kernel` is the thin adapter, one module per mechanism: `Dataplane.apply/drift/counters/cleanup`.
See docs/dataplane.md for the pipeline and the decisions behind it.
"""
