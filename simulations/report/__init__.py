"""``fedinterest report``: one self-contained report.html per run (run_page) or sweep (sweep_page)."""
