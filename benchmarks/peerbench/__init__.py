"""Peers benchmark helpers: RecBole models, EASE and the split in RecBole's layout (benchmarks/bench_peers.py)."""
