"""Process-level plumbing shared by worker.py and starter.py: connection, the worker, the embedded dev server."""
