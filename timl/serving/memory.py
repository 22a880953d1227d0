"""A server worker's memory: large buffers (decoded images) go back to the operating system once freed.

glibc gives an allocation its own memory mapping (unmapped when freed) only from a threshold up, and raises that
threshold to the largest buffer freed so far, up to 32 MB. After the first decoded image is freed, the blocks of
the next ones (Pillow allocates images in blocks of up to 16 MB) come from the heap arena of the thread that
decodes, which keeps them once freed: with 16 request threads a worker held several times the memory its
DECODE_CONCURRENCY decodes need (bench/serve_memory.py). A fixed threshold turns that off.

Giving every freed image back has a price: the next upload's image is fresh memory again, which the kernel maps and
zeroes page by page. Pillow can keep freed blocks for the next image (its block cache); the worker keeps one, so
one image's memory (at most one Pillow block, 16 MB) stays with it. Under load (8 clients, 600x450 JPEGs) a worker's
system CPU per request fell from about 1.65 to 1.0 ms with it (0.76 ms less CPU in all, 3 alternating runs).
"""

from __future__ import annotations

import ctypes
import logging

from PIL import Image

logger = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter number of M_MMAP_THRESHOLD (malloc.h).
M_MMAP_THRESHOLD = -3

#: Allocations of this many bytes or more get their own mapping, returned to the system when freed: decoded images
#: and their bands of rows, not the many small objects of Python and the model.
MMAP_THRESHOLD = 4 * 2**20

#: Freed image blocks Pillow keeps for the next image (each at most ``Image.core.get_block_size()``, 16 MB): one,
#: so a worker answering upload after upload reuses one image's memory instead of mapping it afresh each time.
PILLOW_BLOCKS_KEPT = 1


def return_freed_images() -> bool:
    """Fixes glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process (and the workers it forks), and
    keeps :data:`PILLOW_BLOCKS_KEPT` freed image block for the next image (Pillow's block cache).

    Returns:
        Whether the threshold took effect; False where the C library is not glibc (the threshold stays glibc's).
    """
    Image.core.set_blocks_max(PILLOW_BLOCKS_KEPT)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        logger.debug("mallopt(M_MMAP_THRESHOLD) was refused; freed image memory may stay with the process.")
    return done
