"""The synthetic SynergyReID twin: ``twin`` (the plan, the files, the ground truth), ``draw`` (drawing the
crops with PIL) and ``features`` (clustered synthetic feature vectors for benchmarks and tests)."""
