"""Data: the AI Challenger layout reader, the decode-once cache, slice datasets and the synthetic generator."""
