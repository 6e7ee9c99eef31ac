"""The one exception type the CLI turns into a clear message instead of a traceback."""


class BcautoError(Exception):
    """A problem the user can fix: bad input, a bad study file, an unknown plugin name.

    The message must say where the problem is (file, field, plugin) and what was expected.
    """
