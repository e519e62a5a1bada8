"""Analyses that read SQL views / marts (never raw lake files)."""
