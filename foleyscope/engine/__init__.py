"""The inference engine: presets, weights, modes, sampler, windows, the pipeline and jobs.
It imports nothing from foleyscope.doctor."""
