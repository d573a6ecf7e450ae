"""Errors a user can fix, kept free of heavy imports so the CLI can report them without loading torch."""


class MissingWeightsError(RuntimeError):
    """A pretrained network is needed but no usable weights are configured."""


class RegistryError(RuntimeError):
    """A model registry operation that cannot go ahead (no such run or version, a lock held too long)."""


class GenerateError(Exception):
    """Bad input to `julnet generate`; the message is one line naming the problem."""

    reason = "error"


class ModelNotFoundError(GenerateError):
    reason = "model_not_found"


class UnsupportedModelError(GenerateError):
    reason = "unsupported_model"


class BadVideoError(GenerateError):
    reason = "bad_video"


class BadAudioError(GenerateError):
    reason = "bad_audio"


class NoAudioStreamError(BadAudioError):
    reason = "no_audio_stream"


class SilentAudioError(BadAudioError):
    reason = "silent_audio"


class ShortAudioError(BadAudioError):
    """Speech shorter than generate.min_audio_seconds: a click or a cut-off upload, not a word."""

    reason = "short_audio"


class InputNotFoundError(GenerateError):
    """A --video or --audio that does not exist."""

    reason = "not_found"


class BadOutputError(GenerateError):
    """An output path a command must not or cannot write: the same file as an input or as another output, a folder,
    an existing file (without --overwrite), or one whose folder cannot be created or takes no new file. Every command
    that writes files raises it (julnet.paths), before any work."""

    reason = "bad_output"


class NoFaceError(GenerateError):
    reason = "no_face"


class NotWeightsError(ValueError):
    """A file given as a checkpoint or weights that torch did not save (text, YAML, random bytes, another zip)."""

    def __init__(self, path: object, what: str) -> None:
        super().__init__(f"{path} is not a torch weights file ({what})")
        self.path, self.what = path, what


class PickledObjectsError(ValueError):
    """A torch file that holds pickled objects besides plain weights: refused, as loading it could run code."""
