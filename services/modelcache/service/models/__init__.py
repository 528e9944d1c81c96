"""The models: entries and registry, which ones are in memory (lifecycle, budget, reload), their processes."""
