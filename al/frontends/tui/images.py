"""Pictures in the review screen: the selected pick and its false-negative crops, drawn in the terminal by
textual-image (Sixel or the Kitty graphics protocol where the terminal speaks one, coloured half cells in other
terminals, Unicode blocks without a terminal), and a line of text where an image cannot be shown.

textual-image asks the terminal what it supports when it is first imported, which is impossible once Textual owns
the terminal: this module is imported with the TUI package, before the app starts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from textual.widget import Widget
from textual.widgets import Static

TerminalImage: Any
_renderable: ModuleType | None
try:
    from textual_image import renderable as _renderable
    from textual_image.widget import Image as TerminalImage
except ImportError:  # the TUI still works; every picture becomes its text line
    TerminalImage = None
    _renderable = None


def mode() -> str:
    """How pictures are drawn here: sixel | tgp | halfcell | unicode, or text (textual-image not installed)."""
    if _renderable is None:
        return "text"
    return _renderable.Image.__module__.rsplit(".", 1)[-1]


def picture(path: str | Path, caption: str) -> Widget:
    """The image at `path` as a widget (class "picture"), or a Static naming the file and why it is not shown
    (class "picture-missing")."""
    p = Path(path)
    why = None
    if TerminalImage is None:
        why = "pictures need textual-image"
    else:
        try:
            with PILImage.open(p) as im:
                im.load()
                img = im.convert("RGB")
        except FileNotFoundError:
            why = "file not found"
        except (UnidentifiedImageError, OSError) as e:
            why = f"unreadable ({type(e).__name__})"
    if why is not None:
        return Static(f"{caption}: {p.name} ({why})", classes="picture-missing", markup=False)
    widget = TerminalImage(img, classes="picture")
    widget.tooltip = f"{caption}: {p}"
    widget.border_title = caption
    return widget
