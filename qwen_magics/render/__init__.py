"""Renderers: one per surface (notebook cell, terminal), each consuming events only."""
