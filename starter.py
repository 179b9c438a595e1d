"""Start and follow chaos runs. `python starter.py --help` lists the commands."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:  # reads a file: spared loading Temporal's client and the worker (check.py)
        from durable_chaos.cli.check import main
    else:
        from durable_chaos.cli.app import main
    main()
