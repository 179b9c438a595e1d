"""durable-chaos's own packages, under one name so they never shadow another distribution's top-level modules
(PyPI's `safety` scanner, PyContracts' `contracts`). The product card fixes the rest of the top level: `workflows`,
`activities`, `subjects`, `worker.py` and `starter.py`."""
