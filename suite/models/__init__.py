"""Reusable networks: CNF hypernetwork field, OT-Flow potential."""
