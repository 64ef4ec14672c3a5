"""Command line: ``python -m linalg_lowrank COMMAND [options]``.

Every command is a module listed in ``_COMMANDS`` that provides ``COMMAND_HELP`` (one line),
``COMMAND_DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status);
adding a command is adding its module to the table.
"""

import argparse
import sys

from . import __version__, audit

#: Subcommand name -> module implementing it.
_COMMANDS = {"audit": audit}


def build_parser():
    """The argparse parser of ``python -m linalg_lowrank``, with one subparser per command.

    Returns
    -------
    parser : argparse.ArgumentParser
        Parsing sets ``args.run``, the chosen command's ``run`` function.
    """
    parser = argparse.ArgumentParser(
        prog="python -m linalg_lowrank",
        description="linalg_lowrank: numerical linear algebra for neural-network optimizer research.",
    )
    parser.add_argument("--version", action="version", version=f"linalg_lowrank {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _COMMANDS.items():
        sub = commands.add_parser(name, help=module.COMMAND_HELP, description=module.COMMAND_DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Parse the command line, run the command and return its exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments, command first (default ``sys.argv[1:]``).

    Returns
    -------
    status : int
        The command's exit status; 0 for ``--help``, 2 for a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
