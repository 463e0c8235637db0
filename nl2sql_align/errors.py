"""Errors a user can fix. The CLI prints them without a traceback and exits non-zero."""


class UserError(Exception):
    """Something in the user's input (recipe, data, database, command line) is wrong.

    The message must say where (file, line, key) and how to fix it.
    """


class RecipeError(UserError):
    pass


class DataError(UserError):
    pass


def failing_gold_error(failures: list[str], consequence: str, fix: str) -> DataError:
    """The one message for gold SQL that fails (eval, grpo, pairs): how many, the first five, and the fix."""
    shown = "\n  ".join(failures[:5])
    more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
    return DataError(f"{len(failures)} gold queries fail, so {consequence}:\n  {shown}{more}\n{fix}")
