"""Errors a user can fix. The CLI prints them without a traceback and exits non-zero."""


class UserError(Exception):
    """Something in the user's input (recipe, data, database, command line) is wrong.

    The message must say where (file, line, key) and how to fix it.
    """


class RecipeError(UserError):
    pass


class DataError(UserError):
    pass
