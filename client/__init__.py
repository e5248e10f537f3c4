"""fedinterest: client."""
