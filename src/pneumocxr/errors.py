"""One exception hierarchy for every mistake a user can make.

The CLI turns any ``PneumoCXRError`` into one line on stderr and exit code 2, so each
message must name the bad value (file, key, setting) and say how to fix it.
"""


class PneumoCXRError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(PneumoCXRError):
    """A configuration file or ``--set`` override is invalid."""


class DatasetError(PneumoCXRError):
    """A dataset folder, manifest or archive cannot be used as given."""


class UnsupportedImageError(PneumoCXRError):
    """An image file cannot be decoded: names the file and the reason."""

    def __init__(self, source: object, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class DownloadError(PneumoCXRError):
    """A download failed or its content did not verify."""


class CheckpointError(PneumoCXRError):
    """A checkpoint is missing, corrupt or incompatible."""


class WeightsUnavailableError(PneumoCXRError):
    """Pretrained weights were requested but cannot be obtained (e.g. offline)."""


class OutOfScopeError(PneumoCXRError):
    """An input the model was not made for (e.g. an image smaller than the model input), refused by
    the prediction core's scope policy. ``code`` is machine-readable (the HTTP API returns it)."""

    def __init__(self, source: object, code: str, reason: str):
        self.source = str(source)
        self.code = code
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")
