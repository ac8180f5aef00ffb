"""Exception types. Every error a user can provoke from a file or the command
line is a :class:`WincaffeError` with a message that names where it came from."""


class WincaffeError(Exception):
    """Base class for every error wincaffe raises on purpose."""


class ConfigError(WincaffeError):
    """A net or solver definition is malformed.

    The message names the file, the layer (when there is one) and the field,
    e.g. ``nets/lenet5.yaml: layer 'conv1' (Convolution): convolution_param.kernel_size:
    must be >= 1, got -3``.
    """

    def __init__(self, message, *, source=None, layer=None, layer_type=None, field=None):
        self.source, self.layer, self.layer_type, self.field = source, layer, layer_type, field
        self.bare_message = message
        super().__init__(self._format())

    def _format(self):
        parts = []
        if self.source:
            parts.append(str(self.source))
        if self.layer is not None:
            parts.append(f"layer '{self.layer}'" + (f" ({self.layer_type})" if self.layer_type else ""))
        if self.field:
            parts.append(self.field)
        parts.append(self.bare_message)
        return ": ".join(parts)

    def located(self, *, source=None, layer=None, layer_type=None):
        """Return a copy with the missing location parts filled in."""
        return ConfigError(self.bare_message,
                           source=self.source or source,
                           layer=self.layer if self.layer is not None else layer,
                           layer_type=self.layer_type or layer_type,
                           field=self.field)


class DataError(WincaffeError):
    """A data file is missing, corrupt, truncated or fails verification."""


class TrainingError(WincaffeError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class SnapshotError(WincaffeError):
    """A snapshot or weights file cannot be read or does not fit the net."""
