"""Unit tests: I/O-free classes and in-process parts with temporary files only."""
