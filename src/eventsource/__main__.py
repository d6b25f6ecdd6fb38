"""`python -m eventsource`: the same command line as the `eventsource` script."""

from eventsource.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
