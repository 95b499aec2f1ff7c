"""Matched model implementations: numpy specs/math in `common`, one folder per framework."""
