"""The `perception` subcommands that the runtime itself offers, one thin module each
(`add_arguments`, `main`); `perception/cli.py` wires them (and serve, sim, train, export)."""
