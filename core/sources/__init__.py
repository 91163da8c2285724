"""Everything that enters from disk or an upload passes here first.

``files`` reads regular files only, with a size cap, and keeps paths inside the folder they must stay in;
``images`` decides what an acceptable image is (formats, frames, size, pixel values) and decodes it into a
bounded amount of memory. Code further in can then trust what it is given.
"""

from core.sources.files import FileRefused, contained_path, is_within, open_regular, read_bytes
from core.sources.images import ImageRefused, prepare_image, read_image

__all__ = ["FileRefused", "ImageRefused", "contained_path", "is_within", "open_regular", "prepare_image",
           "read_bytes", "read_image"]
