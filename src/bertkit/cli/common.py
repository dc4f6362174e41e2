"""What every command module shares."""


class UsageError(Exception):
    """Bad input from the command line; printed as one line naming the cause, exit status 2."""
