"""Self-describing network checkpoints in safetensors (loading executes no code).

The genotype, scale and widths travel in the file's metadata, so a checkpoint alone
rebuilds its network: ``load_model(path)``. The networks shipped with the package live in
``deconas/weights/deconas_x{scale}.safetensors`` and load as ``load_model('pretrained', scale)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


from deconas import __version__
from deconas.errors import UserError
from deconas.space.genotype import GenotypeError, parse
from deconas.space.network import DeCoNASNet
from deconas.space.layers import current_names
from deconas import config
from deconas.constants import MAX_PARAMS, PRETRAINED_GLOB, PRETRAINED_SCALE, SCALES, pretrained_name
from deconas.runtime import atomic_write, parse_json, pick_device
from deconas.space.complexity import count_params

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "deconas-net-1"


def pretrained_path(scale: int) -> Path:
    return WEIGHTS_DIR / pretrained_name(scale)


def pretrained_scales() -> list:
    return sorted(int(p.stem.split("_x")[1]) for p in WEIGHTS_DIR.glob(PRETRAINED_GLOB))


def save_model(path, model: DeCoNASNet, **extra) -> None:
    """Write weights + metadata atomically. ``extra`` values are stored as JSON strings."""
    meta = {"format": FORMAT, "deconas_version": __version__, "genotype": str(model.genotype),
            "scale": str(model.scale), "channels": str(model.channels), "blocks": str(model.blocks)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_meta(path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def check_bounds(what: str, genotype, scale: int, channels: int, blocks: int) -> None:
    """Refuse sizes no real network has, before anything is built (one line, naming the value)."""
    if scale not in SCALES:
        raise UserError(f"{what}: scale {scale} is not {', '.join(map(str, SCALES[:-1]))} or {SCALES[-1]}")
    # The config schema's bounds on C, N and M: far above any network of this space.
    for name, v in (("channels", channels), ("blocks", blocks), ("nodes", genotype.nodes)):
        lo, hi = config.bounds(f"model.{name}")
        if not lo <= v <= hi:
            raise UserError(f"{what}: {name}={v} is outside {lo}..{hi}")
    n = count_params(genotype, scale, channels, blocks)
    if n > MAX_PARAMS:
        raise UserError(f"{what}: the network it describes has {n:,} parameters (limit {MAX_PARAMS:,})")


def file_names(f) -> dict:
    """Today's name of each tensor in an open safetensors file -> its name in the file (files
    written before the operations' submodules had names use the old ones)."""
    return current_names({k: k for k in f.keys()})


def check_header(path, model: torch.nn.Module) -> None:
    """Every tensor the network has, with its shape and dtype, is in the file, and nothing else."""
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            names = file_names(f)
            for k, v in expected.items():
                if k not in names:
                    raise UserError(f"checkpoint {path}: tensor {k} is missing")
                sl = f.get_slice(names[k])
                shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                if shape != tuple(v.shape) or dtype != _DTYPES.get(v.dtype):
                    raise UserError(f"checkpoint {path}: tensor {k} is {dtype} {list(shape)}, "
                                    f"expected {_DTYPES.get(v.dtype)} {list(v.shape)}")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    extra = sorted(names[k] for k in set(names) - set(expected))
    if extra:
        raise UserError(f"checkpoint {path}: tensor {extra[0]} does not belong to its network")


def load_model(path, scale: Optional[int] = None, device=None) -> Tuple[DeCoNASNet, dict]:
    """Rebuild the network a checkpoint describes. ``path='pretrained'`` picks the shipped
    network for ``scale``. Returns (model in eval mode on ``device``, metadata)."""
    if str(path) == "pretrained":
        if scale is None:
            scale = 2
        path = pretrained_path(scale)
        if not path.is_file():
            have = ", ".join(f"x{s}" for s in pretrained_scales()) or "none"
            raise UserError(f"no pretrained network for x{scale} ships with this version (shipped: {have}); "
                            f"pass --checkpoint FILE")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"checkpoint {path}: not a deconas network checkpoint (no '{FORMAT}' metadata)")
    if len(meta.get("genotype", "")) > 10_000:
        raise UserError(f"checkpoint {path}: damaged metadata (a genotype of {len(meta['genotype']):,} characters)")
    try:
        genotype = parse(meta["genotype"])
        net_scale, channels, blocks = int(meta["scale"]), int(meta["channels"]), int(meta["blocks"])
    except (KeyError, ValueError, GenotypeError) as e:
        raise UserError(f"checkpoint {path}: damaged metadata ({e})") from None
    if scale is not None and scale != net_scale:
        raise UserError(f"checkpoint {path} is a x{net_scale} network, but --scale {scale} was asked for")
    check_bounds(f"checkpoint {path}", genotype, net_scale, channels, blocks)
    # Built without memory (meta device) and checked against the file's header, tensor by
    # tensor, before anything is allocated: a crafted header cannot make us build a giant network.
    with torch.device("meta"):
        model = DeCoNASNet(genotype, scale=net_scale, channels=channels, blocks=blocks)
    check_header(path, model)
    try:
        # assign: the file's tensors replace the meta ones (to_empty's first call imports sympy,
        # a third of a second of every command's start)
        model.load_state_dict(load_file(str(path)), assign=True)
    except (RuntimeError, SafetensorError) as e:
        raise UserError(f"checkpoint {path}: weights do not match its genotype ({str(e).splitlines()[0]})") from None
    meta.update(scale=net_scale, channels=channels, blocks=blocks, genotype=genotype)
    return model.to(pick_device(device) if not isinstance(device, torch.device) else device).eval(), meta


def resolve_checkpoint(path, scale: int) -> Path:
    """``'pretrained'`` -> the shipped network for ``scale`` (else the shipped x2, whose body
    starts the other scales); ``'pretrained-xS'`` -> the shipped xS network, whatever the run's
    scale (to start x3 from the x2 body now that x3 ships too); anything else is a file path
    that must exist."""
    if str(path) == "pretrained":
        p = pretrained_path(scale)
        return p if p.is_file() else pretrained_path(PRETRAINED_SCALE)
    named = re.fullmatch(r"pretrained-x(\d+)", str(path))
    if named:
        p = pretrained_path(int(named.group(1)))
        if not p.is_file():
            have = ", ".join(f"pretrained-x{s}" for s in pretrained_scales()) or "none"
            raise UserError(f"--init {path}: no such shipped network (shipped: {have})")
        return p
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--init {path}: no such checkpoint file")
    return p


def check_init(path, genotype, scale: int, channels: int, blocks: int):
    """(path, metadata) of an --init checkpoint, refused unless it is the same genotype, C and N."""
    path = resolve_checkpoint(path, scale)
    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"--init {path}: not a deconas network checkpoint (no '{FORMAT}' metadata)")
    theirs = {"genotype": meta.get("genotype"), "channels": meta.get("channels"), "blocks": meta.get("blocks")}
    ours = {"genotype": str(genotype), "channels": str(channels), "blocks": str(blocks)}
    try:
        theirs["genotype"] = str(parse(theirs["genotype"]))
    except (GenotypeError, TypeError, ValueError):
        pass  # reported as a mismatch below
    diff = [f"{k} {theirs[k]} (this run: {ours[k]})" for k in ours if theirs[k] != ours[k]]
    if diff:
        raise UserError(f"--init {path}: a different network: {', '.join(diff)}; "
                        f"--init needs the same genotype, C and N")
    return path, meta


def init_from(model: DeCoNASNet, path, scale: int) -> dict:
    """Initialise ``model`` from a checkpoint: every tensor whose name and shape match is
    copied, the rest keep their fresh initialisation (the upsampler and tail when the
    checkpoint is of another scale). A checkpoint of another genotype, C or N is refused.

    Returns the record of this start for the weights' metadata: the checkpoint, its own
    history (the chain of earlier runs), and which tensors were loaded and left fresh."""
    path, meta = check_init(path, model.genotype, scale, model.channels, model.blocks)
    own = model.state_dict()
    loaded, fresh = [], []
    with safe_open(str(path), framework="pt") as f:
        names = file_names(f)
        for k, v in own.items():
            if k in names and tuple(f.get_slice(names[k]).get_shape()) == tuple(v.shape):
                t = f.get_tensor(names[k])
                if t.dtype != v.dtype:
                    raise UserError(f"--init {path}: tensor {k} is {t.dtype}, expected {v.dtype}")
                with torch.no_grad():
                    v.copy_(t)
                loaded.append(k)
            else:
                fresh.append(k)
    history = []
    try:
        history = parse_json(meta.get("history", "[]"))
    except ValueError:
        pass
    if not history:  # a checkpoint from before histories were kept: describe it from its metadata
        history = [{"run": path.name, "scale": int(meta.get("scale", 0) or 0), "steps": _int(meta.get("step"))}]
    return {"checkpoint": str(path), "scale": int(meta.get("scale", 0) or 0), "step": _int(meta.get("step")),
            "history": history, "loaded": loaded, "fresh": fresh,
            "loaded_params": sum(own[k].numel() for k in loaded), "fresh_params": sum(own[k].numel() for k in fresh)}


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
