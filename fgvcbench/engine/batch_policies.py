"""TrivialAugmentWide and AutoAugment for a whole batch at once, each sample with its own
operation and magnitude, on whatever device the batch lives on.

torchvision's ``TrivialAugmentWide`` draws one operation and one magnitude per *call*, so
applied to a batch every image gets the same augmentation; calling it once per image is
correct but launches a few kernels per image. This module fills that gap: it draws an
(op, magnitude bin, sign) triple per sample exactly as torchvision defines them
(``torchvision/transforms/v2/_auto_augment.py``: 14 ops, 31 magnitude bins) and applies
each op to the samples that drew it — all geometric ops together as one batched
``grid_sample`` (nearest — torchvision's default — or bilinear, as its reference scripts
pass; zero fill, torchvision's affine-grid convention), each colour op
as one batched kernel with per-sample factors. Every op reproduces
``torchvision.transforms.v2.functional`` on uint8 images, pixel for pixel — nearest ties of
shears and rotations included — but for Color's blend, which may round a level apart (tests
compare them op by op).
AutoAugment takes its sub-policies and magnitude space from torchvision's own
``v2.AutoAugment`` and applies each sample's two ops as two such batched passes.

Parameters are drawn on the host from a CPU generator (so a seed gives the same
augmentation on every device) and reach the device in one asynchronous copy each: no
step of a batch waits for the GPU.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from fgvcbench.engine.transfer import to_device

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
NUM_BINS = 31
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
# every op ``apply_ops`` knows: TrivialAugmentWide's 14 (drawn from) and AutoAugment's Invert
ALL_OPS = OPS + ("Invert",)
GRID_CHUNK_PIXELS = 1 << 24   # canvas rows × pixels a nearest grid works out at once (its memory in flight)


def _bins(op: str) -> torch.Tensor | None:
    """torchvision TrivialAugmentWide's magnitude space for one op (None: no magnitude)."""
    if op in ("ShearX", "ShearY", "Brightness", "Color", "Contrast", "Sharpness"):
        return torch.linspace(0.0, 0.99, NUM_BINS)
    if op in ("TranslateX", "TranslateY"):
        return torch.linspace(0.0, 32.0, NUM_BINS)
    if op == "Rotate":
        return torch.linspace(0.0, 135.0, NUM_BINS)
    if op == "Posterize":
        return (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 6)).round().int()).float()
    if op == "Solarize":
        return torch.linspace(1.0, 0.0, NUM_BINS)
    return None


SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
_TABLE = torch.stack([_bins(op) if _bins(op) is not None else torch.zeros(NUM_BINS) for op in OPS])


def sample_params(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample op index and signed magnitude, with torchvision's distribution: op
    uniform, magnitude bin uniform, sign ± with probability ½ for signed ops."""
    op = torch.randint(len(OPS), (batch,), generator=generator)
    level = torch.randint(NUM_BINS, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) <= 0.5
    magnitude = _TABLE[op, level]
    signed = torch.tensor([OPS[i] in SIGNED for i in range(len(OPS))])[op]
    return op, torch.where(signed & flip, -magnitude, magnitude)


def _inverse_affine(cx, cy, angle, tx, ty, shear_x, shear_y) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1), vectorised: [B, 2, 3]."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([torch.stack([m0, m1, m2], -1), torch.stack([m3, m4, m5], -1)], -2)


def _host_affine(ops: list[str], magnitude: torch.Tensor, truncate: bool = True) -> tuple[dict, torch.Tensor, ...]:
    """Each sample's op kind and its affine numbers (angle, translation, shears), on the host
    (``truncate=False``: translations as given, shares of the image's size)."""
    zero = torch.zeros(len(ops), dtype=torch.float64)
    m = magnitude.double()   # torchvision works these out in Python floats: a nearest tie falls alike
    kind = {name: torch.tensor([o == name for o in ops]) for name in GEOMETRIC}
    shear_deg = torch.rad2deg(torch.atan(m))
    angle = torch.where(kind["Rotate"], -(m % 360), zero)            # rotate uses -angle in affine terms
    shift = torch.trunc(m) if truncate else m                          # int(magnitude)
    tx = torch.where(kind["TranslateX"], shift, zero)
    ty = torch.where(kind["TranslateY"], shift, zero)
    return (kind, angle, tx, ty, torch.where(kind["ShearX"], shear_deg, zero),
            torch.where(kind["ShearY"], shear_deg, zero))


def _geometric_canvas(images: torch.Tensor, ops: list[str], magnitude: torch.Tensor,
                      interpolation: str = "nearest", relative: bool = False) -> torch.Tensor:
    """:func:`_geometric` on rows of a ``full`` canvas: each op on the image as it is — its
    own size and orientation, turned about its own centre (shears about its top-left corner),
    zero fill past its extent — as torchvision applies it to that image alone, on the photo
    the row was resized from: a translation is in the photo's pixels, scaled to the row's
    (where the layout has the photo's size; else in the row's own pixels). ``relative``
    (AutoAugment's translations, a share of the image's width or height): the magnitude is
    that share, taken of the photo's size — its longer side worked out from the row's
    aspect, so to within a pixel of the photo — and truncated to whole photo pixels as
    torchvision's ``int()`` does. Rotations and shears look the same at any resolution. The
    affine numbers come from the host; the images' sizes are read on the device."""
    from fgvcbench.data.pipeline import canvas_layout, canvas_photo_side, image_sizes
    b, c, side, width = images.shape
    dev = images.device
    kind, angle, tx, ty, shear_x, shear_y = _host_affine(ops, magnitude, truncate=not relative)
    corner = kind["ShearX"] | kind["ShearY"]
    # the matrices in float64 where the device has it (as torchvision's Python floats), else float32
    work = torch.float32 if dev.type == "mps" else torch.float64
    params = to_device(torch.stack([angle, tx, ty, shear_x, shear_y, corner.double()], 1).to(work), dev)
    extent, transposed = canvas_layout(images)
    wid, hgt = image_sizes(extent, transposed, side, dtype=work)
    photo = canvas_photo_side(images).to(work)
    to_row = torch.where(photo > 0, side / photo.clamp(min=1), torch.ones_like(photo))   # photo pixel → row pixel
    shift = params[:, 1:3]
    if relative:   # a share of the photo's width / height, in whole photo pixels
        shift = torch.trunc(shift * torch.stack([wid, hgt], 1) / to_row.unsqueeze(1))
    params = torch.cat([params[:, :1], shift * to_row.unsqueeze(1), params[:, 3:]], 1)
    cx, cy = -wid * 0.5 * params[:, 5], -hgt * 0.5 * params[:, 5]
    theta = _inverse_affine(cx, cy, params[:, 0], params[:, 1], params[:, 2], params[:, 3], params[:, 4])
    if interpolation == "nearest":   # each source pixel as torchvision picks it, ties included
        grid = _nearest_canvas_grid(theta.float(), wid.float(), hgt.float(), transposed, side, width)
    else:   # bilinear has no ties: one matrix per row from the canvas's pixel to its source
        t = transposed.to(work)
        one, zero = torch.ones_like(t), torch.zeros_like(t)
        bottom = torch.stack([zero, zero, one], 1).unsqueeze(1)                       # [B, 1, 3]
        # stored pixel → the image's centred coordinates (swapping x and y where stored transposed)
        to_image = torch.stack([torch.stack([1 - t, t, -wid / 2], 1), torch.stack([t, 1 - t, -hgt / 2], 1)], 1)
        # the image's centred coordinates → stored pixel → the canvas's [-1, 1]
        to_stored = torch.stack([torch.stack([1 - t, t, (1 - t) * wid / 2 + t * hgt / 2], 1),
                                 torch.stack([t, 1 - t, t * wid / 2 + (1 - t) * hgt / 2], 1)], 1)
        to_grid = to_device(torch.tensor([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / side, -1.0]], dtype=work), dev)
        chain = torch.cat([to_stored, bottom], 1) @ torch.cat([theta, bottom], 1) @ torch.cat([to_image, bottom], 1)
        matrix = (to_grid.expand(b, 2, 3) @ chain).float()                            # [B, 2, 3]
        xs = torch.arange(width, device=dev, dtype=torch.float32) + 0.5               # pixel centres
        ys = torch.arange(side, device=dev, dtype=torch.float32) + 0.5
        base = torch.stack([xs.expand(side, width), ys[:, None].expand(side, width),
                            torch.ones(side, width, device=dev)], -1)
        grid = base.view(1, side * width, 3).expand(b, -1, -1).bmm(matrix.transpose(1, 2)).view(b, side, width, 2)
    columns = torch.arange(width, device=dev).view(1, 1, 1, width)
    source = images.float() * (columns < extent.view(b, 1, 1, 1))    # zero past the extent: torchvision's fill
    out = F.grid_sample(source, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    out = out.round_().to(torch.uint8)
    # torchvision's exact fast paths: 0° and 180° for any image, 90° and 270° for a square one
    right = {deg: (kind["Rotate"] & ((magnitude.float() % 360) == deg)).nonzero().squeeze(1)
             for deg in (0.0, 90.0, 180.0, 270.0)}
    if len(right[0.0]):
        rows = to_device(right[0.0], dev)
        out[rows] = images[rows]
    if len(right[180.0]):
        rows = to_device(right[180.0], dev)
        picked = images[rows]
        mirrored = (extent[rows].view(-1, 1) - 1 - torch.arange(width, device=dev)).clamp(min=0)
        out[rows] = picked.flip(-2).gather(3, mirrored.view(-1, 1, 1, width).expand(-1, c, side, width))
    for k, deg in ((1, 90.0), (3, 270.0)):
        if len(right[deg]):
            rows = to_device(right[deg], dev)
            picked = images[rows]
            turned = torch.cat([torch.rot90(picked[..., :side], k=k, dims=(-2, -1)), picked[..., side:]], -1)
            out[rows] = torch.where((extent[rows] == side).view(-1, 1, 1, 1), turned, out[rows])
    return out


def _nearest_canvas_grid(theta: torch.Tensor, wid: torch.Tensor, hgt: torch.Tensor, transposed: torch.Tensor,
                         side: int, width: int) -> torch.Tensor:
    """A ``grid_sample`` grid over canvas rows that lands on the centre of the very pixel
    torchvision's nearest ``affine`` picks for each row's image alone: its float32 steps —
    the image's centred pixel grid times ``theta`` (float32 ``[B, 2, 3]``, the image's
    inverse affine) over half its size, un-normalised as ``grid_sample`` does, rounded half
    to even — in the image's own orientation, mapped to the stored pixel (transposed rows
    swap x and y); a pixel outside the image samples zeros. A tie (a source coordinate on a
    pixel edge, common for shears and rotations of simple magnitudes) thus falls as in
    torchvision, not as float rounding of the canvas's coordinates would have it (the same
    ``bmm`` as torchvision's: an elementwise sum rounds apart). Rows go in chunks of at most
    16 M pixels, so a large batch of wide rows holds no more than that in flight."""
    b, dev = theta.shape[0], theta.device
    step = max(1, GRID_CHUNK_PIXELS // (side * width))
    if b > step:
        return torch.cat([_nearest_canvas_grid(theta[i:i + step], wid[i:i + step], hgt[i:i + step],
                                               transposed[i:i + step], side, width) for i in range(0, b, step)])
    t = transposed.view(b, 1, 1)   # each row: stored transposed (its image's x along the canvas's rows)
    rows = torch.arange(side, device=dev, dtype=torch.float32).view(1, side, 1).expand(b, side, width)
    cols = torch.arange(width, device=dev, dtype=torch.float32).view(1, 1, width).expand(b, side, width)
    x, y = torch.where(t, rows, cols), torch.where(t, cols, rows)            # the image's own pixel
    size = torch.stack([wid, hgt], 1)                                        # [B, 2]
    centred = torch.stack([x - (wid * 0.5).view(b, 1, 1) + 0.5, y - (hgt * 0.5).view(b, 1, 1) + 0.5,
                           torch.ones_like(x)], -1).view(b, side * width, 3)
    rescaled = theta.transpose(1, 2) / (0.5 * size).unsqueeze(1)             # [B, 3, 2], torchvision's _affine_grid
    normalised = centred.bmm(rescaled)                                       # [B, N, 2]
    source = (((normalised + 1) * size.unsqueeze(1) - 1) / 2).round()       # grid_sample's un-normalise, nearbyint
    inside = ((source >= 0) & (source < size.unsqueeze(1))).all(-1)
    sx, sy = source[..., 0], source[..., 1]
    col, row = torch.where(t.view(b, 1), sy, sx), torch.where(t.view(b, 1), sx, sy)   # the stored pixel
    grid = torch.stack([(2 * col + 1) / width - 1, (2 * row + 1) / side - 1], -1)
    grid = torch.where(inside.unsqueeze(-1), grid, torch.full_like(grid, -3.0))
    return grid.view(b, side, width, 2)


def _geometric(images: torch.Tensor, ops: list[str], magnitude: torch.Tensor,
               interpolation: str = "nearest", canvas: bool = False, relative: bool = False) -> torch.Tensor:
    if canvas:
        return _geometric_canvas(images, ops, magnitude, interpolation, relative)
    if relative:
        raise ValueError("relative translations are for canvas rows; give others their magnitudes in pixels")
    b, _, h, w = images.shape
    dev = images.device
    zero = torch.zeros(b, dtype=torch.float64)
    m = magnitude.float()  # host: every per-sample parameter is worked out there
    kind, angle, tx, ty, shear_x, shear_y = _host_affine(ops, magnitude)
    # shears turn around the top-left corner (center=[0, 0] → -w/2, -h/2 in centred coordinates)
    corner = kind["ShearX"] | kind["ShearY"]
    cx, cy = torch.where(corner, -w * 0.5, zero), torch.where(corner, -h * 0.5, zero)
    theta = _inverse_affine(cx, cy, angle, tx, ty, shear_x, shear_y).float()   # as torchvision: float64 → float32
    scaled = to_device(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h]), dev)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=dev)], -1)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    out = F.grid_sample(images.float(), grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    out = out.round_().to(torch.uint8)
    # torchvision's exact fast paths for right angles (and 0) when rotating square images
    turns = ((1, 90.0), (2, 180.0), (3, 270.0)) if h == w else ()
    for k, deg in turns + ((0, 0.0),):
        pick = (kind["Rotate"] & ((m % 360) == deg)).nonzero().squeeze(1)
        if len(pick):
            rows = to_device(pick, dev)
            out[rows] = torch.rot90(images[rows], k=k, dims=(-2, -1)) if k else images[rows]
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * 0.2989 + x[:, 1] * 0.587 + x[:, 2] * 0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = ratio.view(-1, 1, 1, 1)
    return (x * r + other * (1.0 - r)).clamp_(0, 255).to(torch.uint8)   # .to() truncates, as torchvision


def _equalize_within(images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """torchvision's ``equalize`` (PIL's lookup table), each image's histogram counted over
    its ``valid`` pixels only (``[B, 1, H, W]`` bool)."""
    b, c, h, w = images.shape
    flat = images.flatten(-2).long()                                       # [B, C, H·W]
    counted = valid.flatten(-2).expand(b, c, h * w).to(torch.int32)
    hist = torch.zeros(b, c, 256, dtype=torch.int32, device=images.device).scatter_add_(-1, flat, counted)
    cum = hist.cumsum(-1)
    last = cum.argmax(-1, keepdim=True)                                     # the last value present
    pixels = counted.sum(-1, keepdim=True)
    step = (pixels - hist.gather(-1, last)).div(255, rounding_mode="floor")
    lut = (cum[..., :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255).to(torch.uint8)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], -1)
    equalized = lut.gather(-1, flat).view_as(images)
    return torch.where((step != 0).unsqueeze(-1), equalized, images)


def _colour(images: torch.Tensor, op: str, magnitude: torch.Tensor, canvas: bool = False) -> torch.Tensor:
    """A colour op per sample; on a ``full`` canvas each image's statistics (mean, extremes,
    histogram) and Sharpness's untouched border are its own, not the canvas's."""
    from fgvcbench.data.pipeline import canvas_layout
    x = images.float()
    factor = to_device(1.0 + magnitude, images.device)
    valid = None
    if canvas:
        extent, _ = canvas_layout(images)
        columns = torch.arange(images.shape[-1], device=images.device).view(1, 1, 1, -1)
        valid = columns < extent.view(-1, 1, 1, 1)                       # [B, 1, 1, W]
    if valid is not None and op in ("Contrast", "Sharpness", "AutoContrast", "Equalize"):
        return _colour_within(images, x, op, factor, valid, extent)
    if op == "Brightness":
        return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 255).to(torch.uint8)
    if op == "Color":
        return _blend(x, _gray(x), factor)
    if op == "Contrast":
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), factor)
    if op == "Sharpness":
        if x.shape[-1] <= 2 or x.shape[-2] <= 2:
            return images
        kernel = torch.ones(3, 3, device=x.device)
        kernel[1, 1] = 5.0
        kernel = kernel / 13.0
        blurred = F.conv2d(x, kernel.expand(3, 1, 3, 3), groups=3).round_()
        out = x.clone()
        view = out[..., 1:-1, 1:-1]
        view.add_((blurred - view) * (1.0 - factor).view(-1, 1, 1, 1))
        return out.clamp_(0, 255).to(torch.uint8)
    if op == "Posterize":
        bits = magnitude.to(torch.int64)
        mask = to_device((((1 << bits) - 1) << (8 - bits)).clamp(max=255).to(torch.uint8), images.device)
        return images & mask.view(-1, 1, 1, 1)
    if op == "Solarize":
        threshold = to_device(255.0 * magnitude, images.device).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, images.bitwise_not(), images)
    if op == "AutoContrast":  # torchvision's autocontrast, with where() for its masked stores (no sync)
        low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
        flat = high == low
        scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255))
        return (x - torch.where(flat, 0.0, low)).div_(scale).clamp_(0, 255).to(torch.uint8)
    from torchvision.transforms.v2 import functional as TF
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return images.bitwise_not()
    return images


def _colour_within(images: torch.Tensor, x: torch.Tensor, op: str, factor: torch.Tensor, valid: torch.Tensor,
                   extent: torch.Tensor) -> torch.Tensor:
    """The colour ops that look past a pixel, on canvas rows (:func:`_colour`)."""
    b, _, h, w = images.shape
    if op == "Contrast":
        gray = _gray(x) * valid
        mean = gray.sum(dim=(-3, -2, -1), keepdim=True) / (extent.view(-1, 1, 1, 1) * h)
        return _blend(x, mean, factor)
    if op == "Sharpness":
        kernel = torch.ones(3, 3, device=x.device)
        kernel[1, 1] = 5.0
        blurred = F.conv2d(x, (kernel / 13.0).expand(3, 1, 3, 3), groups=3, padding=1).round_()
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        columns = torch.arange(w, device=x.device).view(1, 1, 1, w)
        inside = (rows >= 1) & (rows <= h - 2) & (columns >= 1) & (columns <= extent.view(-1, 1, 1, 1) - 2)
        out = torch.where(inside, x + (blurred - x) * (1.0 - factor).view(-1, 1, 1, 1), x)   # the border as it is
        return out.clamp_(0, 255).to(torch.uint8)
    if op == "AutoContrast":
        low = torch.where(valid, x, torch.inf).amin(dim=(-2, -1), keepdim=True)
        high = torch.where(valid, x, -torch.inf).amax(dim=(-2, -1), keepdim=True)
        flat = high == low
        scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255))
        return (x - torch.where(flat, 0.0, low)).div_(scale).clamp_(0, 255).to(torch.uint8)
    return _equalize_within(images, valid.expand(b, 1, h, w))


def _refill(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Canvas rows after an op, as ``canvas_row`` writes them: each row's (new) edge
    repeated past its extent to the last column, whose first two pixels keep the layout."""
    from fgvcbench.data.pipeline import canvas_layout
    b, c, h, w = images.shape
    extent, _ = canvas_layout(images)
    columns = torch.minimum(torch.arange(w, device=images.device).view(1, -1), (extent - 1).view(-1, 1))
    refilled = out.gather(3, columns.view(b, 1, 1, w).expand(b, c, h, w))
    refilled[:, :, :2, w - 1] = images[:, :, :2, w - 1]
    return refilled


def apply_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
              interpolation: str = "nearest", canvas: bool = False, relative: bool = False) -> torch.Tensor:
    """Apply op ``ALL_OPS[op[i]]`` with ``magnitude[i]`` to sample ``i`` of a uint8 batch
    (``op`` and ``magnitude`` on the host; ``images`` on any device, of any height and
    width — with ``canvas``, a ``full`` cache's rows, each as the image it holds, and with
    ``relative`` too, translations given as a share of each image's size); geometric ops
    resample with ``interpolation`` (nearest or bilinear)."""
    names = [ALL_OPS[i] for i in op.tolist()]
    if all(n == "Identity" for n in names):
        return images
    out = images.clone()
    dev = images.device
    geo = torch.tensor([n in GEOMETRIC for n in names]).nonzero().squeeze(1)
    if len(geo):
        rows = to_device(geo, dev)
        out[rows] = _geometric(images[rows], [names[i] for i in geo.tolist()], magnitude[geo], interpolation, canvas,
                               relative)
    for name in ALL_OPS:
        if name == "Identity" or name in GEOMETRIC:
            continue
        idx = torch.tensor([i for i, n in enumerate(names) if n == name], dtype=torch.long)
        if len(idx):
            rows = to_device(idx, dev)
            out[rows] = _colour(images[rows], name, magnitude[idx], canvas)
    return _refill(out, images) if canvas else out


def trivial_augment_wide(images: torch.Tensor, generator: torch.Generator,
                         interpolation: str = "nearest", canvas: bool = False) -> torch.Tensor:
    """TrivialAugmentWide on a uint8 batch ``[B, 3, H, W]`` with per-sample parameters
    (``canvas``: the rows of a ``full`` cache, each augmented as the image it holds)."""
    op, magnitude = sample_params(images.shape[0], generator)
    return apply_ops(images, op, magnitude, interpolation, canvas)


@lru_cache(maxsize=None)
def autoaugment_table(policy: str, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """torchvision ``v2.AutoAugment``'s sub-policies as tensors ``[P, 2]``: op index into
    ``ALL_OPS``, probability (float64, compared with a float32 draw as torchvision does),
    magnitude (from its 10-bin space at this image size; 0 where the op has none) and
    whether the magnitude's sign is random."""
    from torchvision.transforms import v2
    tv = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
    op, prob, mag, signed = (torch.zeros(len(tv._policies), 2, dtype=dt)
                             for dt in (torch.long, torch.float64, torch.float, torch.bool))
    for p, sub_policy in enumerate(tv._policies):
        for s, (name, probability, level) in enumerate(sub_policy):
            space, is_signed = tv._AUGMENTATION_SPACE[name]
            bins = space(10, height, width)
            op[p, s], prob[p, s], signed[p, s] = ALL_OPS.index(name), probability, is_signed
            mag[p, s] = float(bins[level]) if bins is not None else 0.0
    return op, prob, mag, signed


def autoaugment_params(batch: int, height: int, width: int, generator: torch.Generator,
                       policy: str = "imagenet") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample, as torchvision's ``AutoAugment.forward`` draws them: a sub-policy
    uniformly; for each of its two ops a coin against the op's probability (Identity when
    it fails) and, for signed ops, a sign ± with probability ½. Returns the two passes'
    ``(op, magnitude)``."""
    op, prob, mag, signed = autoaugment_table(policy, height, width)
    choice = torch.randint(len(op), (batch,), generator=generator)
    passes = []
    for s in range(2):
        applied = torch.rand(batch, generator=generator) <= prob[choice, s]
        negative = signed[choice, s] & (torch.rand(batch, generator=generator) <= 0.5)
        passes.append((torch.where(applied, op[choice, s], 0),
                       torch.where(negative, -mag[choice, s], mag[choice, s])))
    return passes


def auto_augment(images: torch.Tensor, generator: torch.Generator, policy: str = "imagenet",
                 interpolation: str = "nearest", canvas: bool = False) -> torch.Tensor:
    """AutoAugment (torchvision's policy, ImageNet by default) on a uint8 batch with
    per-sample sub-policies, coins and signs. ``canvas``: the rows of a ``full`` cache, each
    augmented as the image it holds — its translations a share of that image's own size
    (the magnitude space taken at size 1, the share applied per row)."""
    height, width = (1, 1) if canvas else images.shape[-2:]
    for op, magnitude in autoaugment_params(images.shape[0], height, width, generator, policy):
        images = apply_ops(images, op, magnitude, interpolation, canvas=canvas, relative=canvas)
    return images
