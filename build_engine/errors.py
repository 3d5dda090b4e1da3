"""The one error type of this package: a bad setting, reported before any GPU work starts."""


class ConfigError(ValueError):
    """A build or planning request that cannot work; the message says what to change."""
