"""Data sources: toy 2-D generators, BSDS300 (+ offline proxy)."""
