"""Activities: everything that touches the outside world (Docker, the subject's network API, Claude).

One module per concern. What the worker registers is `activities.registry.ALL`; this package imports nothing
itself, so a command that needs one module (the command line's image builds) does not load them all.
"""
