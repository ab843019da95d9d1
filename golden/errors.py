"""The one exception type for user mistakes; the CLI prints it as a single line."""


class HardwireError(Exception):
    """Bad input or an unsatisfiable request. The message is one actionable line."""
