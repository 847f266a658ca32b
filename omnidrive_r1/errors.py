"""The base of every error that is the user's to fix (a recipe field, a data row, a plug-in path, a
checkpoint): the command line prints its message alone and exits with status 2, without a traceback."""


class UserError(ValueError):
    """An input the user can fix; the message says which and how."""
