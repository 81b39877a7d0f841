"""Default schedule rules, one module per kernel class; `dlc.schedule` drives them.

A rule is `apply(sch, cpu) -> bool`: it schedules the PrimFunc held by the
`s_tir.Schedule` in place and returns True, or returns False when the kernel is not of
its class. A rule that raises leaves the kernel to the next rule (`dlc.schedule._rules`
fixes the order). `cpu.CpuParams` is all a rule knows about the target.
"""
