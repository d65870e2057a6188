"""Sub-commands of `hpff-bench`; each module exposes add_parser(subparsers)."""
