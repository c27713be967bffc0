"""Console entry points (t2cr-train, t2cr-eval, t2cr-score); each takes Hydra overrides."""
