"""Options: declared once, parsed into one typed value, expanded, and built into a checked Request."""
