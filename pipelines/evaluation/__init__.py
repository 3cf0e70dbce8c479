"""Evaluation: benchmarks as Problems (``benchmarks``), grading with math-verify in a timeout
process pool (``grading``, ``pool``), full precision vs. quantized (``compare``; its JSON file and
typed summary in ``comparison_json``, its figures in ``comparison_figures``), and the accuracy an
adapter brings back (``recovery``)."""
