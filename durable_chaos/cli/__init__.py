"""The starter's command line (typer + Rich)."""
