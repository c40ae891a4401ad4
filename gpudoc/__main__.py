"""``python -m gpudoc`` runs the CLI."""

from gpudoc.cli import main

if __name__ == "__main__":
    main()
