"""The one exception type people see: a request refused with a message, nothing changed."""


class UserError(ValueError):
    """Bad input (empty or huge prompt, unknown generation, out-of-range score...).

    The message is written for the person who sent the request; the app shows it as is.
    """
