"""Chaos, shutdown, secrets, bad input, invariants: trying hard to make the reaper misbehave."""
