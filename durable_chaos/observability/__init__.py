"""Data only: the Grafana dashboard over the worker's metrics (grafana-dashboard.json)."""
