"""Peak memory of loading an original torch.save checkpoint (guided-diffusion's
ADM-256, random weights, 2.2 GB) and running one network pass on it: ud2m
(`ud2m denoise --model FILE.pt`) vs PyTorch (torch.load + load_state_dict +
the same pass), each in its own process, in one run.

    python bench/checkpoint_memory.py --build build [--config adm-256-uncond]

ud2m maps the file (io/mapped_file.hpp): the tensors read from it are views of
the page cache, which the kernel can drop, so its anonymous (heap) memory
should be about one copy of the weights (the network) where reading the file
into memory would need two. Sampled from /proc/PID/status every 10 ms:
RssAnon (heap) and RssFile (mapped file pages, reclaimable).
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from adm_forward import PRESETS, build  # noqa: E402


def status_mib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def peak_memory(command):
    """Runs command; returns (exit code, peak RssAnon MiB, peak RssFile MiB, peak sum MiB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    anon = file = total = 0.0
    while process.poll() is None:
        try:
            s = status_mib(process.pid)
            anon, file = max(anon, s["RssAnon"]), max(file, s["RssFile"])
            total = max(total, s["RssAnon"] + s["RssFile"])
        except (FileNotFoundError, KeyError, ProcessLookupError):
            pass
        time.sleep(0.01)
    if process.returncode:
        print(process.stderr.read(), file=sys.stderr)
    return process.returncode, anon, file, total


PYTHON_PEER = """
import sys, torch
sys.path.insert(0, {bench!r})
from adm_forward import PRESETS, build
model = build(PRESETS[{config!r}]).eval()
model.load_state_dict(torch.load({path!r}, map_location="cpu", weights_only=True))
with torch.no_grad():
    model.forward_diffusion(torch.randn(1, 3, 32, 32), torch.full((1,), 500.0))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--config", default="adm-256-uncond", choices=sorted(PRESETS))
    args = p.parse_args()
    binary = pathlib.Path(args.build).resolve() / "ud2m"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        torch.manual_seed(0)
        model = build(PRESETS[args.config])
        path = tmp / "model.pt"
        torch.save(model.state_dict(), path)  # as guided-diffusion's published files are saved
        del model
        size_mib = path.stat().st_size / 2**20
        image = tmp / "noisy.png"  # what is denoised does not matter here
        Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()).save(image)
        rows = []
        code, anon, file, total = peak_memory([binary, "denoise", "--model", str(path), "--sigma", "0.1",
                                               "--tile", "0", str(image), str(tmp / "out.png")])
        assert code == 0, "ud2m denoise failed"
        rows.append(("ud2m denoise (file mapped)", anon, file, total))
        peer = PYTHON_PEER.format(bench=str(pathlib.Path(__file__).resolve().parent), config=args.config,
                                  path=str(path))
        code, anon, file, total = peak_memory([sys.executable, "-c", peer])
        assert code == 0, "the PyTorch peer failed"
        rows.append(("PyTorch torch.load + load_state_dict", anon, file, total))
    print(f"{args.config}: checkpoint {size_mib:.0f} MiB (torch.save zip), one pass at 32x32")
    print(f"| process | peak RssAnon MiB | × file | peak RssFile MiB | peak RSS MiB |")
    print(f"|---|---|---|---|---|")
    for name, anon, file, total in rows:
        print(f"| {name} | {anon:.0f} | {anon / size_mib:.2f} | {file:.0f} | {total:.0f} |")
    print(f"ud2m heap peak / PyTorch heap peak: {rows[0][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
