"""Reproducible leaderboard runs (``lmgym leaderboard``) and the throughput benchmark."""
