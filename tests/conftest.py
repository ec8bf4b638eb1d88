from hypothesis import settings

# Property tests draw the same examples in every run (no per-run random seed, no example database): a
# failure reproduces, and a pass is not luck of the draw.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")
