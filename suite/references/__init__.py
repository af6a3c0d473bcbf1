"""Exact references where mathematics gives them (closed forms), shared by tasks and tests."""
