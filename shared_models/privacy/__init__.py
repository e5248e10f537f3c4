"""fedinterest: shared_models.privacy."""
