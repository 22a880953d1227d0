"""DICOM images: single-frame colour and monochrome DICOM files turned into the 8-bit RGB image every format gives.

Read through ``pydicom`` (imported only when a DICOM file comes). What is read: one frame, photometric
interpretation RGB, YBR_FULL, YBR_FULL_422 (converted to RGB), MONOCHROME2 or MONOCHROME1 (inverted), 8 or 16 bits,
uncompressed or in a compressed transfer syntax pydicom has a decoder for here (RLE Lossless natively, JPEG
baseline and JPEG 2000 through Pillow). Monochrome values pass the modality LUT (rescale slope and intercept),
then the first VOI window of the file (WindowCenter/WindowWidth, with its VOILUTFunction) or its VOI LUT; without
either, 8-bit values stay as they are and wider ones are stretched from the image's minimum to its maximum. The
pixels are shown as stored (DICOM has no EXIF orientation; the patient orientation tags describe the body, not a
display turn). The pixel cap is checked from Rows and Columns before the pixel data is decoded.

Privacy: no patient identifier is read, logged or put in a message; a message quoting a pydicom error has the
file's identifying values removed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from timl.errors import ImageError

#: The file suffix of DICOM files (any case); other files are DICOM when they carry the preamble.
DICOM_SUFFIX = ".dcm"

#: The 128-byte preamble then ``DICM``: how a DICOM file starts.
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

#: Photometric interpretation -> samples per pixel it needs.
PHOTOMETRIC_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3}

#: Elements that identify a patient: their values are removed from every message quoting pydicom.
PATIENT_IDENTIFIERS = ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
                       "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID", "PatientMotherBirthName",
                       "MedicalRecordLocator", "AccessionNumber", "InstitutionName", "ReferringPhysicianName")


def has_preamble(head: bytes) -> bool:
    """Whether the first bytes of a file are a DICOM preamble (128 bytes then ``DICM``)."""
    return head[PREAMBLE_LENGTH:PREAMBLE_LENGTH + len(MAGIC)] == MAGIC


def is_dicom(source: Any) -> bool:
    """Whether ``source`` (a path, bytes or a seekable binary file object) is a DICOM file: a path ending in
    ``.dcm`` (any case), or any source starting with the DICOM preamble. A missing or unreadable path is not."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return has_preamble(bytes(source[:PREAMBLE_LENGTH + len(MAGIC)]))
    if isinstance(source, (str, Path)):
        if Path(source).suffix.lower() == DICOM_SUFFIX:
            return True
        try:
            with open(source, "rb") as handle:
                return has_preamble(handle.read(PREAMBLE_LENGTH + len(MAGIC)))
        except OSError:
            return False
    if hasattr(source, "read") and hasattr(source, "seek") and getattr(source, "seekable", lambda: True)():
        start = source.tell()
        head = source.read(PREAMBLE_LENGTH + len(MAGIC))
        source.seek(start)
        return isinstance(head, bytes) and has_preamble(head)
    return False


def _scrubbed(message: str, dataset) -> str:
    """``message`` without the values of the dataset's patient identifiers (read raw, never validated or logged)."""
    from pydicom.datadict import tag_for_keyword

    for keyword in PATIENT_IDENTIFIERS:
        item = dataset.get_item(tag_for_keyword(keyword))  # raw: converting could warn with the value
        raw = item.value if item is not None else None
        value = raw.decode("latin-1", "replace") if isinstance(raw, bytes) else str(raw or "")
        parts = {part.strip() for part in (value, *value.replace("=", "^").split("^"))}
        for part in sorted(parts, key=len, reverse=True):  # the whole value before its components, every run
            if len(part) >= 2:
                message = message.replace(part, "[removed]")
    return message


def _read(source: Any, label: str):
    """The dataset of a DICOM file, its pixel data still encoded."""
    import pydicom

    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        return pydicom.dcmread(source, force=True)
    except FileNotFoundError as error:
        raise ImageError(f"Cannot decode {label}: the file does not exist.") from error
    except Exception as error:  # pydicom raises many kinds on damaged files; none reaches the user as a trace
        raise ImageError(f"Cannot decode {label}: it is not a readable DICOM file; it may be damaged or "
                         f"truncated ({type(error).__name__}).") from error


def _check(dataset, label: str, max_pixels: int | None) -> None:
    """Refuses what TIML does not read, before any pixel is decoded: no image, several frames, a transfer syntax
    without a decoder, a photometric interpretation it does not read or that contradicts the samples per pixel,
    more pixels than the cap."""
    from pydicom.pixels import get_decoder

    if "PixelData" not in dataset or "Rows" not in dataset or "Columns" not in dataset:
        raise ImageError(f"Cannot decode {label}: the DICOM file has no image (no pixel data, or the file is "
                         "truncated before it).")
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(f"Cannot decode {label}: it is a multi-frame DICOM file ({frames} frames); TIML reads "
                         "single-frame images. Export the frame to classify as its own file.")
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise ImageError(f"Cannot decode {label}: its DICOM transfer syntax {syntax.name} ({syntax}) has no "
                             "decoder here. TIML reads uncompressed DICOM, RLE Lossless and JPEG baseline.")
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if PHOTOMETRIC_SAMPLES.get(photometric) != samples:
        raise ImageError(f"Cannot decode {label}: DICOM photometric interpretation {photometric!r} with {samples} "
                         f"sample(s) per pixel is not readable. Expected one of: "
                         f"{', '.join(f'{name} ({count})' for name, count in PHOTOMETRIC_SAMPLES.items())}.")
    width, height = int(dataset.Columns), int(dataset.Rows)
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"Cannot decode {label}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels.")


def _first(value) -> float | None:
    """The first value of a DICOM number that may hold several (WindowCenter ``40\\400``), or None."""
    if value is None or value == "":
        return None
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


def _windowed(values: np.ndarray, dataset) -> np.ndarray:
    """Monochrome values (after the modality LUT) to [0, 255]: the first VOI window with its function (DICOM
    PS3.3 C.11.2.1.2), else the VOI LUT, else 8-bit values as they are or a stretch from minimum to maximum."""
    from pydicom.pixels import apply_voi_lut

    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper()
        if function == "SIGMOID":
            return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        if function == "LINEAR_EXACT":
            return np.clip((values - center) / width + 0.5, 0, 1) * 255.0
        return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255.0 if width > 1 else \
            np.where(values > center - 0.5, 255.0, 0.0)
    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return np.asarray(apply_voi_lut(values, dataset, prefer_lut=True), dtype=np.float64) / (2 ** bits - 1) * 255.0
    rescaled = "RescaleSlope" in dataset or "ModalityLUTSequence" in dataset
    if int(dataset.get("BitsStored", 8)) <= 8 and not rescaled and values.min() >= 0:
        return values
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)


def _to_rgb(pixels: np.ndarray, dataset) -> np.ndarray:
    """The decoded pixels (colour already RGB) as an 8-bit RGB array."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(dataset.PhotometricInterpretation).strip()
    if photometric.startswith("MONOCHROME"):
        values = _windowed(np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64), dataset)
        if photometric == "MONOCHROME1":
            values = 255.0 - values
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if pixels.dtype != np.uint8:  # colour of more than 8 bits a sample: scaled from its stored range
        top = 2 ** int(dataset.get("BitsStored", 16)) - 1
        pixels = np.clip(np.round(pixels.astype(np.float64) / top * 255.0), 0, 255)
    return pixels.astype(np.uint8)


def decode_dicom(source: Any, *, max_pixels: int | None, label: str) -> Image.Image:
    """Decodes a single-frame DICOM file into an 8-bit RGB PIL image (see the module's docstring for the rules).

    Args:
        source: a path, bytes or a binary file object holding a DICOM file.
        max_pixels: refuse images with more pixels than this (checked before decoding); ``None``: no cap.
        label: how to call the file in error messages.

    Returns:
        The image in RGB, as stored (no orientation turn).

    Raises:
        ImageError: a damaged or truncated file, several frames, a transfer syntax without a decoder here, a
            photometric interpretation TIML does not read, or too many pixels.
    """
    dataset = _read(source, label)
    _check(dataset, label, max_pixels)
    try:
        pixels = dataset.pixel_array  # pydicom converts YBR_FULL and YBR_FULL_422 to RGB (as_rgb)
        return Image.fromarray(_to_rgb(pixels, dataset))
    except ImageError:
        raise
    except Exception as error:  # pydicom's decoders raise many kinds; none reaches the user as a trace
        message = _scrubbed(str(error).split(" - ")[0], dataset)
        raise ImageError(f"Cannot decode {label}: the DICOM image is damaged or incomplete ({message}).") from error
