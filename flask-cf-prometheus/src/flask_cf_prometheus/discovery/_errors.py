"""The one error cf-discovery expects: a pass or a setting that failed."""


class _DiscoveryError(Exception):
    """A pass that failed: one line, never holding a credential. `retry_after` is how
    many seconds the API asked to be left alone, if it asked."""

    def __init__(self, message, status=None, retry_after=None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
