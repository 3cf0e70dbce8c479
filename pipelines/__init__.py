"""quantmedic.pipelines: benchmarks, generation, grading, training, end-to-end runs and the CLI."""
