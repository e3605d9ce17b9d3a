"""Benchmark machinery as a library: what machine a measurement ran on (`machine`), how many FLOPs
a compiled XLA program does (`flops`), how a step is timed (`timing`) and how a result is recorded
(`results`). The scripts in `benchmarks/` use it; it imports nothing of the application (config,
experiment, cli, registry, run directories), so it can time any program, not only `metajax train`.

Import the submodules themselves (`from metajax.bench.results import Result, write`): this package
imports nothing, so that `timing`, standard library only, also loads where JAX is absent.
"""
