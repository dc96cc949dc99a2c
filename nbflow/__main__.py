"""``python -m nbflow`` is the ``nbflow`` command."""

from nbflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
