"""Turning user images (numpy, PIL, torch) into float tensors and back.

Accepted single images:

- numpy ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA;
  dtypes ``uint8``, ``uint16``, ``float32``/``float64`` (floats must lie in [0, 1]).
- PIL images in modes ``L``, ``LA``, ``RGB``, ``RGBA``, ``P`` (palette, expanded), ``I;16`` /
  ``I`` (16-bit) and ``F`` (float, in [0, 1]).
- torch tensors ``(H, W)`` or ``(C, H, W)`` with C in 1, 3, 4; ``uint8`` or floating in [0, 1].

Batches: numpy ``(N, H, W, C)`` and torch ``(N, C, H, W)``.

Every decoded image becomes a float32 ``(C, H, W)`` CPU tensor in [0, 1] plus an
:class:`ImageSpec` that remembers how to build the same kind of object for the output (and
carries a note when the data look wrong but are still usable, e.g. 8-bit values in a 16-bit
image).

:func:`pil_pixels` is the one conversion of a PIL image to its samples, shared by PIL inputs
here and by the file reader :func:`emmafuse.image_io.read_image`; the scale rules (uint8 by
255, uint16 by 65535, floats as they are and only within [0, 1]) are those of numpy input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import torch

from emmafuse.errors import InputError, InputTypeError

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["ImageSpec", "ImageLike", "decode_image", "encode_image", "pil_pixels", "split_batch", "is_batch"]

#: One image (or a 4-D batch) as :meth:`emmafuse.Fuser.fuse` takes and returns it.
ImageLike = Union[np.ndarray, torch.Tensor, "PIL.Image.Image"]
Layout = Literal["HW", "HWC", "CHW"]

_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOAT_TOLERANCE = 1e-3  # floats a hair outside [0, 1] (rounding) are clipped, not rejected
_PIL_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1, "I;16B": 1, "I;16L": 1, "I;16N": 1, "I": 1, "F": 1}
_UINT8_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
#: Colour spaces that files may hold (converted to RGB by the file reader only).
_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


@dataclass(frozen=True)
class ImageSpec:
    """How an input image was given, so the output can be given back the same way."""

    kind: Literal["numpy", "pil", "torch"]
    dtype: Any  # numpy dtype, torch dtype, or PIL mode string
    layout: Layout
    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    height: int
    width: int
    device: Any = None  # torch device of a tensor input
    note: str | None = None  # a warning for the caller (suspicious but valid data)

    @property
    def has_color(self) -> bool:
        return self.channels in (3, 4)

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def gray_only(self) -> bool:
        """PIL's 16-bit (``I;16``, ``I``) and float (``F``) modes have no colour or alpha variant."""
        return self.kind == "pil" and str(self.dtype).startswith(("I", "F"))


def _pil_module() -> Any:
    import PIL.Image

    return PIL.Image


def is_pil(obj: object) -> bool:
    try:
        return isinstance(obj, _pil_module().Image)
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False


def is_batch(obj: object) -> bool:
    """4-D numpy arrays and tensors are batches."""
    return isinstance(obj, (np.ndarray, torch.Tensor)) and obj.ndim == 4


def _parameter(name: str) -> str:
    """The argument of ``Fuser.fuse`` an image name belongs to (``"ir[2]"`` -> ``"ir"``)."""
    return name.split("[", 1)[0]


def split_batch(obj: np.ndarray | torch.Tensor, name: str) -> list[np.ndarray | torch.Tensor]:
    if obj.shape[0] == 0:
        raise InputError(f"{name}: the batch is empty (shape {tuple(obj.shape)})", parameter=_parameter(name))
    return [obj[i] for i in range(obj.shape[0])]


def _check_float(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(
            f"{name} contains {bad} NaN/Inf value(s); clean the image before fusing", parameter=_parameter(name)
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
        hint = ""
        if hi > 255.5:
            hint = " (looks like 0..65535 data: divide by 65535 or pass uint16)"
        elif hi > 1.5:
            hint = " (looks like 0..255 data: divide by 255 or pass uint8)"
        raise InputError(
            f"{name}: floating-point images must lie in [0, 1], found [{lo:g}, {hi:g}]{hint}",
            parameter=_parameter(name),
        )
    return np.clip(arr, 0.0, 1.0)


def _low_16bit_note(peak: int, name: str) -> str | None:
    """A warning for 16-bit data that never leaves the 8-bit range (it would fuse near-black)."""
    if peak >= 256:
        return None
    return (
        f"{name}: 16-bit image whose maximum is {peak} (below 256): this looks like 8-bit data and "
        "fuses as a near-black image; convert it to uint8 (or scale it to 0..65535) first"
    )


def _numpy_to_unit(arr: np.ndarray, name: str) -> np.ndarray:
    """Any supported numpy dtype -> float32 in [0, 1]."""
    if arr.dtype in _INT_SCALE:
        return arr.astype(np.float32) / _INT_SCALE[arr.dtype]
    if arr.dtype in (np.float32, np.float64, np.float16):
        return _check_float(arr.astype(np.float32, copy=False), name)
    if arr.dtype == np.bool_:
        raise InputTypeError(
            f"{name}: boolean masks are not images; convert to uint8 (0/255) first", parameter=_parameter(name)
        )
    raise InputTypeError(
        f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16, or float32/float64 in [0, 1]",
        parameter=_parameter(name),
    )


def _check_shape(shape: tuple[int, ...], name: str, channel_axis: int | None) -> None:
    if any(s == 0 for s in shape):
        raise InputError(f"{name} is empty (shape {shape})", parameter=_parameter(name))
    if channel_axis is not None and shape[channel_axis] not in (1, 3, 4):
        raise InputError(
            f"{name}: {shape[channel_axis]} channels (shape {shape}) is not supported; "
            "expected 1 (gray), 3 (RGB) or 4 (RGBA)",
            parameter=_parameter(name),
        )


def _decode_numpy(arr: np.ndarray, name: str) -> tuple[torch.Tensor, ImageSpec]:
    layout: Layout
    if arr.ndim == 2:
        _check_shape(arr.shape, name, None)
        layout, chw = "HW", arr[None]
    elif arr.ndim == 3:
        if arr.shape[-1] not in (1, 3, 4):
            raise InputError(
                f"{name}: shape {arr.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                "pass a batch of gray images as (N, H, W, 1) or as a list",
                parameter=_parameter(name),
            )
        _check_shape(arr.shape, name, 2)
        layout, chw = "HWC", np.moveaxis(arr, -1, 0)
    else:
        raise InputError(f"{name}: expected a 2-D or 3-D array, got shape {arr.shape}", parameter=_parameter(name))
    unit = _numpy_to_unit(np.ascontiguousarray(chw), name)
    note = _low_16bit_note(int(arr.max()), name) if arr.dtype == np.uint16 else None
    spec = ImageSpec("numpy", arr.dtype, layout, chw.shape[0], chw.shape[1], chw.shape[2], note=note)
    return torch.from_numpy(unit), spec


def pil_pixels(img: Any, name: str, *, colour_spaces: bool = False) -> np.ndarray:
    """The samples of a PIL image: ``uint8`` (L, LA, RGB, RGBA; palettes expanded to RGB or
    RGBA, 1-bit to L), ``uint16`` (16- and 32-bit integer modes, values 0..65535) or ``float32`` (F).

    ``colour_spaces``: also convert CMYK, YCbCr, LAB and HSV to RGB (what files may hold);
    otherwise they are refused, naming the modes to convert to.

    Raises:
        InputTypeError: a mode that is not supported.
        InputError: a 32-bit integer image with values outside 0..65535.
    """
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    elif mode == "1":
        img = img.convert("L")
    elif colour_spaces and mode in _COLOUR_SPACES:
        img = img.convert("RGB")
    if img.mode not in _PIL_MODES:
        raise InputTypeError(
            f"{name}: PIL mode '{img.mode}' is not supported; convert to 'L', 'RGB' or 'RGBA'",
            parameter=_parameter(name),
        )
    arr = np.asarray(img)
    if img.mode.startswith("I"):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(
                f"{name}: 32-bit integer image values outside 0..65535 are not supported", parameter=_parameter(name)
            )
        arr = arr.astype(np.uint16)
    elif img.mode == "F":
        arr = arr.astype(np.float32, copy=False)
    return arr


def _decode_pil(img: Any, name: str) -> tuple[torch.Tensor, ImageSpec]:
    arr = pil_pixels(img, name)
    if img.width == 0 or img.height == 0:
        raise InputError(f"{name} is empty ({img.width}x{img.height})", parameter=_parameter(name))
    # the mode of the output: palettes and 1-bit images come back as what they were expanded to
    mode = _UINT8_MODES[1 if arr.ndim == 2 else arr.shape[-1]] if arr.dtype == np.uint8 else img.mode
    note = _low_16bit_note(int(arr.max()), name) if arr.dtype == np.uint16 else None
    unit = _numpy_to_unit(arr, name)
    chw = unit[None] if unit.ndim == 2 else np.moveaxis(unit, -1, 0)
    spec = ImageSpec("pil", mode, "HWC", chw.shape[0], chw.shape[1], chw.shape[2], note=note)
    return torch.from_numpy(np.ascontiguousarray(chw)), spec


def _decode_torch(t: torch.Tensor, name: str) -> tuple[torch.Tensor, ImageSpec]:
    layout: Layout
    if t.ndim == 2:
        _check_shape(tuple(t.shape), name, None)
        layout, chw = "HW", t.unsqueeze(0)
    elif t.ndim == 3:
        if t.shape[0] not in (1, 3, 4) and all(t.shape):
            # a numpy-style (H, W, C) tensor would otherwise read as "H channels" and nothing more
            hint = "; if it is (H, W, C), use tensor.permute(2, 0, 1)" if t.shape[-1] in (1, 3, 4) else ""
            raise InputError(
                f"{name}: {t.shape[0]} channels (shape {tuple(t.shape)}) is not supported: torch tensors "
                f"are (C, H, W) with C = 1 (gray), 3 (RGB) or 4 (RGBA){hint}",
                parameter=_parameter(name),
            )
        _check_shape(tuple(t.shape), name, 0)
        layout, chw = "CHW", t
    else:
        raise InputError(
            f"{name}: expected a tensor of shape (H, W) or (C, H, W), got {tuple(t.shape)}", parameter=_parameter(name)
        )
    src = chw.detach().cpu()
    if src.dtype == torch.uint8:
        unit = src.float() / 255.0
    elif src.is_floating_point():
        unit = torch.from_numpy(_check_float(src.float().numpy(), name))
    else:
        raise InputTypeError(
            f"{name}: unsupported tensor dtype {t.dtype}; use uint8 or a floating dtype in [0, 1]",
            parameter=_parameter(name),
        )
    spec = ImageSpec("torch", t.dtype, layout, chw.shape[0], chw.shape[1], chw.shape[2], t.device)
    return unit.contiguous(), spec


def decode_image(image: object, name: str) -> tuple[torch.Tensor, ImageSpec]:
    """Validate one image and return ``(float32 (C, H, W) tensor in [0, 1], spec)``.

    Raises:
        InputTypeError: (a ``TypeError``) not an array/tensor/PIL image, or an unsupported dtype
            or mode.
        InputError: (a ``ValueError``) empty, wrong shape or channel count, NaN/Inf, floats
            outside [0, 1]. Both name the argument (``parameter``: ``"ir"`` or ``"vis"``).
    """
    if isinstance(image, np.ndarray):
        return _decode_numpy(image, name)
    if isinstance(image, torch.Tensor):
        return _decode_torch(image, name)
    if is_pil(image):
        return _decode_pil(image, name)
    raise InputTypeError(
        f"{name}: expected a numpy array, a PIL image or a torch tensor, got {type(image).__name__}",
        parameter=_parameter(name),
    )


def encode_image(chw: torch.Tensor, spec: ImageSpec) -> Any:
    """Build the output in the container, dtype and layout of ``spec``.

    ``chw`` is a float ``(C, H, W)`` CPU tensor in [0, 1] whose channel count may differ from
    ``spec.channels`` (gray input, colour output); the layout follows the channel count.
    """
    c = chw.shape[0]
    if spec.kind == "torch":
        out = chw
        if spec.dtype == torch.uint8:
            out = torch.round(out * 255.0).to(torch.uint8)
        else:
            out = out.to(spec.dtype)
        if spec.layout == "HW" and c == 1:
            out = out[0]
        return out.to(spec.device)
    arr = chw.numpy()
    if spec.kind == "pil":
        image_module = _pil_module()
        mode = spec.dtype
        hwc = np.moveaxis(arr, 0, -1)
        if mode.startswith("I"):
            data = np.round(hwc[..., 0] * 65535.0).astype(np.uint16)
            return image_module.fromarray(data.astype(np.int32), mode="I") if mode == "I" else image_module.fromarray(data)
        if mode == "F":
            return image_module.fromarray(hwc[..., 0].astype(np.float32), mode="F")
        data = np.round(hwc * 255.0).astype(np.uint8)
        return image_module.fromarray(data[..., 0] if c == 1 else data)
    dtype = np.dtype(spec.dtype)
    if dtype in _INT_SCALE:
        out_arr = np.round(arr.astype(np.float64) * _INT_SCALE[dtype]).astype(dtype)
    else:
        out_arr = arr.astype(dtype)
    if spec.layout == "HW" and c == 1:
        return out_arr[0]
    return np.ascontiguousarray(np.moveaxis(out_arr, 0, -1))
