"""One module per `edge-app` subcommand (see edge_app.cli.COMMAND_MODULES)."""
