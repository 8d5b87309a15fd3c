"""One module per `weakcorr` subcommand; each defines `add_parser(subparsers)`."""
