"""Errors a user can fix, kept free of heavy imports so the CLI can report them without loading torch."""


class MissingWeightsError(RuntimeError):
    """A pretrained network is needed but no usable weights are configured."""


class RegistryError(RuntimeError):
    """A model registry operation that cannot go ahead (no such run or version, a lock held too long)."""


class StepError(RuntimeError):
    """A step of the retraining chain failed; the message is the step's own error line."""


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


# Failures a user causes that come from the libraries underneath (MLflow, S3, the file system), by the error codes
# those libraries give them. Anything else keeps its traceback: it is a bug to report, not an input to fix.
MLFLOW_USER_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                     "RESOURCE_ALREADY_EXISTS", "INVALID_STATE", "BAD_REQUEST", "ENDPOINT_NOT_FOUND"}
S3_USER_CODES = {"NoSuchBucket", "NoSuchKey", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "403", "404"}
BOTO_USER_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "EndpointConnectionError", "InvalidS3AddressingStyleError"}


def user_error(exc: BaseException) -> str | None:
    """The one line to print for a failure the user caused (an unknown run, version, alias or model; a missing
    bucket, file or key; wrong credentials; a service that does not answer), or None for anything else."""
    kind = type(exc)
    module = kind.__module__.split(".")[0]
    names = {k.__name__ for k in kind.__mro__}
    if module == "mlflow" and "MlflowException" in names:
        code = str(getattr(exc, "error_code", ""))
        if code in MLFLOW_USER_CODES or str(exc).startswith("API request to "):  # the server refused or did not answer
            return _first_line(exc)
    elif module == "botocore":
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in S3_USER_CODES or names & BOTO_USER_ERRORS:
            bucket = str(getattr(exc, "response", {}).get("Error", {}).get("BucketName", ""))
            line = _first_line(exc)  # S3's NoSuchBucket message does not name the bucket; its response does
            return f"{line}: s3://{bucket}" if bucket and bucket not in line else line
    elif isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return _first_line(exc)
    elif isinstance(exc, OSError) and "AWS Error" in str(exc):  # pyarrow's S3 file system: bucket, key or credentials
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
