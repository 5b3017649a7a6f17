"""The one exception type for mistakes a user can fix (bad config, bad file, unknown class)."""


class InputError(ValueError):
    """A user-fixable problem. The message is one line naming the file or key and the fix."""
