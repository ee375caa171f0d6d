"""Runnable examples: the demo configuration and the jobs of the README's tour."""
