"""Start and follow chaos runs. `python starter.py --help` lists the commands."""

from durable_chaos.cli.app import main

if __name__ == "__main__":
    main()
