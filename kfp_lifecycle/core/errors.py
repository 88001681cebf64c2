"""The errors a served model raises: one line for users, no traceback; anything else is a bug."""


class LifecycleError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class DataError(LifecycleError):
    """The data cannot be used as given (unreadable, empty, wrong target, ...)."""


class BundleError(LifecycleError):
    """A model bundle is missing, incomplete or has been tampered with."""


class SchemaError(LifecycleError):
    """A prediction request does not match the input schema the model was trained on."""


class RegistryError(LifecycleError):
    """A registry operation could not be carried out."""
