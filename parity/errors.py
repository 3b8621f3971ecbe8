"""The one exception type the CLI turns into a one-line message and exit status 2."""


class InputError(Exception):
    """Bad input from the user: a case file, a fixture, a flag, a checkpoint folder."""
