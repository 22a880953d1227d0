"""``python -m timl.client IMAGE URL``: send an image to a TIML server (the original SendImage.py).

Prints the status and the JSON answer; with ``--save-images DIR`` also writes the base64 PNGs of an explanation
(``grey``, ``heatmap``, ``comp``) as ``DIR/<image>-<method>-<kind>.png``, the names the explain command uses.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import click

from timl.cli import command

#: The answer's fields that hold base64 PNG images (the original TIML's explain answer).
IMAGE_FIELDS = ("grey", "heatmap", "comp")


class RedirectRefused(urllib.error.URLError):
    """The server answered with a redirect: the client does not follow it (the token and image would go along)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: urllib would follow a POST's 301/302/303 as a GET with the ``Authorization``
    header, to any host and from https to http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise RedirectRefused(f"the server answered {code} {msg}, a redirect to {newurl}; the client does not follow "
                              "redirects (the token and the image would go along): use the final URL")


_OPENER = urllib.request.build_opener(_NoRedirects)


def send_image(image: str | Path, url: str, timeout: float = 120, token: str | None = None) -> tuple[int, dict]:
    """POSTs ``image`` as multipart field ``file`` to ``url`` (with ``Authorization: Bearer token`` when a
    token is given); returns the status and the JSON answer.

    Raises:
        RedirectRefused: the server answered with a redirect (never followed).
        urllib.error.URLError: the server cannot be reached.
    """
    path = Path(image)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except json.JSONDecodeError:
            return error.code, {"error": error.reason}


def save_images(answer: dict, image: str | Path, out_dir: str | Path) -> list[Path]:
    """Writes the base64 PNGs of a server answer as ``out_dir/<image stem>-<method>-<kind>.png``.

    Args:
        answer: the server's JSON answer; its ``grey``, ``heatmap`` and ``comp`` fields are written, the others
            ignored (a classification answer has none: nothing is written).
        image: the image that was sent (its stem starts the file names).
        out_dir: the folder, created if needed.

    Returns:
        The files written.

    Raises:
        ValueError: a field that is not a base64 PNG.
    """
    out_dir = Path(out_dir)
    method = re.sub(r"[^A-Za-z0-9+_.-]", "_", str(answer.get("method") or "answer")).lstrip(".") or "answer"
    written = []
    for kind in IMAGE_FIELDS:
        if not isinstance(answer.get(kind), str):
            continue
        try:
            data = base64.b64decode(answer[kind], validate=True)
        except binascii.Error as error:
            raise ValueError(f"The answer's {kind!r} field is not base64 ({error}). "
                             f"Received: {kind}={answer[kind][:40]!r}...") from None
        if not data.startswith(b"\x89PNG"):
            raise ValueError(f"The answer's {kind!r} field is not a PNG image. Received: {kind}={answer[kind][:40]!r}")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{Path(image).stem}-{method}-{kind}.png"
        path.write_bytes(data)
        written.append(path)
    return written


EXAMPLE = """Examples:

\b
  python -m timl.client lesion.jpg http://127.0.0.1:8080/api/classify
  python -m timl.client lesion.jpg http://127.0.0.1:5000/rest/explain/gradcam/block5_conv3 --save-images out
"""


@command(epilog=EXAMPLE)
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("url")
@click.option("--save-images", "save_dir", type=click.Path(file_okay=False),
              help="Also write the answer's grey, heatmap and comp PNGs to this folder as "
                   "<image>-<method>-<kind>.png.")
@click.option("--token", envvar="TIML_API_TOKEN", default=None,
              help="API token of a server with API_TOKENS_FILE. Prefer the TIML_API_TOKEN environment variable: "
                   "a --token on the command line is visible to other users in ps. [env: TIML_API_TOKEN]")
def cli(image, url, save_dir, token):
    """Send IMAGE to a TIML server URL (classify or explain) and print the status and the JSON."""
    try:
        status, answer = send_image(image, url, token=token)
    except RedirectRefused as error:
        click.echo(f"error: {url}: {error.reason}", err=True)
        sys.exit(2)
    except urllib.error.URLError as error:
        click.echo(f"error: cannot reach {url}: {error.reason}", err=True)
        sys.exit(2)
    click.echo(f"status: {status}")
    click.echo(json.dumps(answer, indent=2))
    if save_dir and status == 200:
        try:
            written = save_images(answer, image, save_dir)
        except ValueError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        click.echo(f"Saved {len(written)} images to {save_dir}" + (": " if written else "") +
                   ", ".join(path.name for path in written))
    sys.exit(0 if status == 200 else 1)


if __name__ == "__main__":
    cli()
