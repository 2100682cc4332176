"""The commands, one module each (``list`` is listing.py), with the same two entry points: ``add_parser`` and the
handler it sets (see COMMAND_MODULES in bench/cli.py); shared argument helpers in args.py."""
