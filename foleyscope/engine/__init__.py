"""The inference engine: presets, weights, modes, sampler, windows, the pipeline and jobs.
It never imports the doctor (tests/test_jobs.py checks every module)."""
