"""Subcommands beyond list/run, one module each (see COMMAND_MODULES in bench/cli.py)."""
