"""The few exception types Sandra raises on purpose.

Each message is written for the user: what went wrong and what to do about it.
They are caught at the boundaries (the engine, the window, the command line).
"""


class SandraError(Exception):
    """Base class: a problem the user can act on."""


class ConfigError(SandraError):
    """A setting is missing or invalid."""


class AuthError(SandraError):
    """The provider refused the key or token."""


class ProviderError(SandraError):
    """The provider could not be reached or answered something unusable."""


class DeviceError(SandraError):
    """A sound device is missing, busy or vanished."""


class CallFailed(SandraError):
    """A call could not be established or was lost for good."""
