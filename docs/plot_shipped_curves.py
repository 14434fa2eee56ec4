"""Training curves of the shipped networks, from their runs' metrics.jsonl files (one run per
stage of a network's history; a warm restart is a later stage on the same scale).

    python docs/plot_shipped_curves.py docs/results/pretrained-x3-[23].jsonl docs/results/pretrained-x4-[23].jsonl \
        -o docs/img/pretrained-curves.png
    python docs/plot_shipped_curves.py docs/results/pretrained-x2-2.jsonl --start x2=5750 \
        -o docs/img/pretrained-x2-restart-curves.png
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path, help="metrics.jsonl files, named <preset>[-<stage>].jsonl")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--start", nargs="*", default=[], metavar="xS=STEPS",
                    help="steps a scale's network had before its first log here (a stage whose log is not given)")
    args = ap.parse_args()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    offsets = {k: int(v) for k, v in (s.split("=", 1) for s in args.start)}
    for log in args.logs:
        recs = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
        scale = log.stem.split("-")[1]  # pretrained-x3[-stage]
        start = offsets.get(scale, 0)  # later stages continue the same network's step axis
        steps = [start + r["step"] for r in recs]
        ax[0].plot(steps, [r["loss"] for r in recs], label=log.stem)
        ax[1].plot(steps, [r["val_psnr"] for r in recs], marker="o", ms=3, label=log.stem)
        offsets[scale] = steps[-1]
    ax[0].set_xlabel("step (this network)"), ax[0].set_ylabel("L1 loss (train)"), ax[0].set_yscale("log")
    ax[1].set_xlabel("step (this network)"), ax[1].set_ylabel("validation PSNR (dB, Y, 6 held-out images)")
    ax[1].legend(fontsize=7)
    for a in ax:
        a.xaxis.set_major_locator(plt.MaxNLocator(6))
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
