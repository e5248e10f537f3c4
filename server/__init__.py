"""fedinterest: server."""
