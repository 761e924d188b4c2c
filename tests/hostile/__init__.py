"""Hostile-input tests: malformed events, hostile images and object keys (issue 7)."""
