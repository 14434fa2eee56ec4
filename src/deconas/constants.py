"""Fixed values of deconas that are not config settings (``config.py`` holds those), each
named once here and imported wherever it is used."""

# The upscaling factors of the search space, the networks and their checkpoints.
SCALES = (2, 3, 4)
# 'pretrained' with no scale means the shipped x2 network, whose body starts every scale.
PRETRAINED_SCALE = 2
# A checkpoint whose network would hold more parameters than this is refused before anything
# is built (far above any network of the space; the channel, block and node bounds are the
# config schema's).
MAX_PARAMS = 200_000_000

# Where a network runs (`--backend`): auto = ONNX Runtime on the CPU, torch on CUDA.
BACKENDS = ("auto", "torch", "onnxruntime")
# ONNX opsets torch's TorchScript exporter writes (21+ needs the dynamo exporter), and ours.
OPSETS = range(11, 21)
DEFAULT_OPSET = 17
# Numeric precisions of an exported graph (`export --precision`; fp16 is for GPU hosts) and of
# running a network (`upscale`/`eval --precision`). int8 is ONNX Runtime's static QDQ
# quantization; bf16 is torch on the CPU's AMX tiles, the network's body in bf16 and its first
# and last convolutions in fp32. Each one's PSNR cost per shipped network is measured in
# docs/upscale.md; a precision may be the default only where it costs at most
# MAX_DEFAULT_COST_DB (int8 does not, bf16 does), and `auto` picks bf16 only on a CPU where it
# was measured faster (AMX-BF16).
PRECISIONS = ("fp32", "fp16", "int8")
UPSCALE_PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"  # export and eval (the protocol's numbers)
DEFAULT_UPSCALE_PRECISION = "auto"
MAX_DEFAULT_COST_DB = 0.02
# `upscale --outscale`: any factor in this range (the network at a shipped scale, then MATLAB bicubic).
OUTSCALE_RANGE = (1.0, 8.0)
# CPU threads a command may be asked for (ONNX Runtime crashes on absurd counts).
MAX_THREADS = 1024
# Input pixels above which `upscale` refuses an image (about 8000x5000), checked from the header.
MAX_PIXELS = 40_000_000

# Away from a terminal, long commands print their progress as a plain line this often (seconds).
PROGRESS_EVERY_S = 30

# `deconas profile`: the LR input it times the parts at (square) and the runs it takes the median of.
PROFILE_SIZE = 128
PROFILE_REPEATS = 30

# Every random stream of a run is seeded from `seed` plus one of these offsets, so the streams
# differ and a rerun draws them again exactly.
SEED_RANK_STRIDE = 7919  # rank r's own streams (its training patches, its torch RNG): seed + 7919 r
SEED_REWARD = 1  # the search's reward patches, the same on every rank
SEED_DERIVE = 1  # derive's samples from the controller
SEED_STUDY = 12345  # the study's uniform draws of random architectures
SEED_NOISE = 1  # the study's reward-noise batches
SEED_STRATEGY = 2  # a strategy's draws (random, evolution): the same on every rank
SEED_CHILD = 3  # uniform and fair child steps' draws (and random/evolution's): seed + 3 + 7919 r
SEED_CALIB = 4  # int8 calibration patches' positions
SEED_MATCHED = 5  # the full study's size-matched random partners of its picks: seed + 12345 + 5

# The strategies the study compares, each as the search settings it sets (docs/search.md);
# "controller-loo" also scores study.loo_samples architectures per controller step, with as
# many fewer steps, so every strategy scores as many architectures.
STUDY_STRATEGIES = {
    "controller": {"strategy": "controller", "reward_baseline": "moving_average"},
    "controller-loo": {"strategy": "controller", "reward_baseline": "leave_one_out"},
    "random": {"strategy": "random"},
    "evolution": {"strategy": "evolution"},
}

# The shipped networks' files, in deconas/weights/.
PRETRAINED_GLOB = "deconas_x*.safetensors"


def pretrained_name(scale: int) -> str:
    return f"deconas_x{scale}.safetensors"
