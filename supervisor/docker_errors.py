"""The Docker facade's own errors, and the translation of docker-py's into them."""

from __future__ import annotations

import docker.errors
import requests.exceptions


class DockerError(Exception):
    """A Docker Engine call failed; the message names the object it was about."""


class DockerUnavailable(DockerError):
    """The Docker Engine cannot be reached."""


class ImageNotFound(DockerError):
    """An image is neither present locally nor pullable."""


class ContainerNotFound(DockerError):
    """No container by that name or id (never created, or removed)."""


def translate(exc: Exception, what: str) -> DockerError:
    """docker-py's (or requests') exception as ours, its message prefixed with `what`."""
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{what}: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        return DockerError(f"{what}: {exc.explanation or exc}")
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException):
        return DockerUnavailable(f"{what}: Docker Engine unreachable ({exc})")
    return DockerError(f"{what}: {exc}")
