"""Start and follow chaos runs. `python starter.py --help` lists the commands."""

if __name__ == "__main__":
    from durable_chaos.cli.app import main

    main()
