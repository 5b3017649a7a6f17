"""Performance measurements. `python -m benchmarks` runs all of them (or name some:
`python -m benchmarks denoise extract`) and writes benchmarks/results.json."""
