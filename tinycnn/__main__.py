"""``python -m tinycnn ...``: the same as the ``tinycnn`` console script."""
from tinycnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
