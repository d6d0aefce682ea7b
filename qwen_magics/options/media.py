"""Images and videos for ``--image`` / ``--video``: URLs, files or notebook variables, as URLs.

A URL is sent as is; a file or a value (bytes, a PIL image, a numpy array) is
sent inline as a base64 data URL, after its type is checked from its first
bytes and its size against a limit, so a wrong path or a non-image is one
clear line before anything is sent.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidInput

MAX_BYTES = 10 * 2**20
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
                b"GIF89a": "image/gif", b"BM": "image/bmp"}


def media_url(spec: str, namespace: Mapping[str, Any], kind: str) -> str:
    """A URL for ``spec``: a URL, a path, or the name of a variable holding the media."""
    if spec.startswith(("http://", "https://", "data:", "oss://")):
        return spec
    if spec.isidentifier() and spec in namespace:
        return _data_url(_as_bytes(namespace[spec], spec), spec, kind)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InvalidInput(f"--{kind} {spec!r}: no such file or variable", "give a URL, a file path or a variable name")
    if path.stat().st_size > MAX_BYTES:
        raise InvalidInput(f"--{kind} {spec!r} is {path.stat().st_size / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB "
                           "limit for inline files", "pass a URL instead, or a smaller file")
    return _data_url(path.read_bytes(), spec, kind)


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if type(value).__module__.startswith("PIL."):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        try:
            from PIL import Image
        except ImportError:
            raise InvalidInput(f"{name} is a numpy array; turning it into an image needs Pillow",
                               "pip install pillow, or pass a file") from None
        return _as_bytes(Image.fromarray(value), name)
    raise InvalidInput(f"{name} is a {type(value).__name__}, not an image or video",
                       "pass bytes, a PIL image, a numpy array, a file path or a URL")


def _data_url(data: bytes, label: str, kind: str) -> str:
    if len(data) > MAX_BYTES:
        raise InvalidInput(f"--{kind} {label!r} is {len(data) / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB limit "
                           "for inline data", "pass a URL instead")
    mime = _sniff(data, kind)
    if mime is None:
        raise InvalidInput(f"--{kind} {label!r} is not {'an image' if kind == 'image' else 'a video'} "
                           f"(unrecognised content)", "give a PNG, JPEG, GIF, WEBP or BMP image, or an MP4/WEBM video")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _sniff(data: bytes, kind: str) -> str | None:
    if kind == "image":
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "image/webp"
        return next((mime for magic, mime in _IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def user_content(prompt: str, images: list[str], videos: list[str]) -> str | list[dict[str, Any]]:
    """The user message content: plain text, or OpenAI chat parts when media is attached."""
    if not images and not videos:
        return prompt
    return ([{"type": "text", "text": prompt}] + [{"type": "image_url", "image_url": {"url": u}} for u in images]
            + [{"type": "video_url", "video_url": {"url": u}} for u in videos])
