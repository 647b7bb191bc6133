"""Engines drive rounds: they own time, processes and transport, and call client/strategy code."""
