"""Workflow classes only. Deterministic code: see each module's docstring."""
