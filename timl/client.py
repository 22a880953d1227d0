"""``python -m timl.client IMAGE URL``: send an image to a TIML server (the original SendImage.py)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import click


def send_image(image: str | Path, url: str, timeout: float = 120) -> tuple[int, dict]:
    """POSTs ``image`` as multipart field ``file`` to ``url``; returns the status and the JSON answer."""
    path = Path(image)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except json.JSONDecodeError:
            return error.code, {"error": error.reason}


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Example: python -m timl.client lesion.jpg http://127.0.0.1:8080/api/classify")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("url")
def cli(image, url):
    """Send IMAGE to a TIML server URL (classify or explain) and print the status and the JSON."""
    try:
        status, answer = send_image(image, url)
    except urllib.error.URLError as error:
        click.echo(f"error: cannot reach {url}: {error.reason}", err=True)
        sys.exit(2)
    click.echo(f"status: {status}")
    click.echo(json.dumps(answer, indent=2))
    sys.exit(0 if status == 200 else 1)


if __name__ == "__main__":
    cli()
