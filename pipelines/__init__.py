"""quantmedic.pipelines: everything that runs models, and the command line.

``models`` (loading, quantization, generation, continuations), ``evaluation`` (benchmarks,
grading, comparison, recovery), ``training`` (DPO), ``study`` (``quantmedic run`` and its report),
``cli`` (one module per command group) and ``data`` (the shipped public data). See ARCHITECTURE.md.
"""
