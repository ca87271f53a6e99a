"""`python -m tokenvault_cli`: the same as the `tokenvault` command."""

from tokenvault_cli.app import main

if __name__ == "__main__":
    main()
