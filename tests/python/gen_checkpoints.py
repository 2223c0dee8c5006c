"""Checkpoints in every layout torch.save (and friends) writes, each with the
tensors the C++ reader must find saved beside it as safetensors, plus
malicious pickles the reader must refuse without running them.

Malicious payloads would create a marker file PWNED_<case> in the output
folder; the C++ tests check that it never appears.
"""
import builtins
import contextlib
import collections
import io
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import torch
from safetensors.torch import save_file


def expected(tensors, path):
    """Stores the tensors the reader must return, contiguous, as safetensors."""
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def small_state_dict():
    g = torch.Generator().manual_seed(1)
    return collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3, generator=g)),
            ("conv.bias", torch.randn(4, generator=g)),
            ("norm.weight", torch.rand(4, generator=g).half()),
            ("steps", torch.tensor(7)),  # 0-d
            ("empty", torch.zeros(0, 5)),
        ]
    )


def every_dtype():
    base = torch.arange(-6, 6).view(3, 4)
    return {
        "f32": base.float() / 3,
        "f64": base.double() / 3,
        "f16": base.half() / 3,
        "bf16": base.bfloat16() / 3,
        "i64": base * 10**12,
        "i32": base.int() * 100000,
        "i16": base.short() * 1000,
        "i8": base.to(torch.int8),
        "u8": (base + 6).to(torch.uint8) * 20,
        "bool": base % 3 == 0,
    }


def shared_views():
    base = torch.arange(24, dtype=torch.float32).view(4, 6) / 5
    return {
        "base": base,
        "transposed": base.t(),  # non-contiguous, same storage
        "slice": base[1:3, 2:5],  # storage offset 8, strides (6, 1)
        "flat_tail": base.view(-1)[5:11],
        "every_other": base[:, ::2],
        "alias": base,  # the same tensor twice
    }


def write_layouts(out):
    sd = small_state_dict()
    torch.save(dict(sd), out / "plain.pt")
    expected(sd, out / "plain.expected.safetensors")
    torch.save(sd, out / "ordered.pth")
    # Newer pickle protocols: FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE.
    torch.save(sd, out / "protocol4.pt", pickle_protocol=4)
    torch.save(sd, out / "protocol5_legacy.pt", pickle_protocol=5, _use_new_zipfile_serialization=False)
    torch.save({"model": sd, "optimizer": {"step": 5}}, out / "nested.pt")
    expected({"model." + k: v for k, v in sd.items()}, out / "nested.expected.safetensors")

    opt_state = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.001, "params": [0]}]}
    lightning = {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "2.1.0",
        "long_list": list(range(100)),
        "state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        "optimizer_states": [opt_state],
        "hyper_parameters": {"lr": 0.0001, "channel_mult": (1, 2, 4), "name": "unet", "ema": True, "dropout": None},
    }
    torch.save(lightning, out / "lightning.ckpt")
    tensors = {"state_dict.module." + k: v for k, v in sd.items()}
    tensors["optimizer_states.0.state.0.exp_avg"] = opt_state["state"][0]["exp_avg"]
    expected(tensors, out / "lightning.expected.safetensors")

    views = shared_views()
    torch.save(views, out / "shared.pt")
    expected(views, out / "shared.expected.safetensors")
    dtypes = every_dtype()
    torch.save(dtypes, out / "dtypes.pt")
    expected(dtypes, out / "dtypes.expected.safetensors")
    params = {
        "weight": torch.nn.Parameter(torch.randn(3, 2)),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "expanded": torch.arange(3.0).view(3, 1).expand(3, 4),  # stride 0
    }
    torch.save(params, out / "parameters.pt")
    expected(params, out / "parameters.expected.safetensors")

    legacy = {**dtypes, **{"view." + k: v for k, v in views.items()}, "epoch": 12, "name": "legacy"}
    torch.save(legacy, out / "legacy.pt", _use_new_zipfile_serialization=False)
    expected({k: v for k, v in legacy.items() if torch.is_tensor(v)}, out / "legacy.expected.safetensors")

    rezip_deflated(out / "plain.pt", out / "deflated.pt")
    rezip_zip64(out / "plain.pt", out / "zip64.pt")
    write_big_endian(out)

    # numpy values, as training scripts leave them in hyper-parameters and statistics.
    arrays = {
        "stats": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(-2, 3, dtype=">i4"),
        "mask": np.array([True, False, True]),
    }
    hparams = {"lr": np.float64(1e-4), "steps": np.int64(5), "flag": np.bool_(True), "half": np.float16(0.5)}
    torch.save({"state_dict": sd, "hyper_parameters": hparams, **arrays}, out / "numpy.ckpt")
    tensors = {"state_dict." + k: v for k, v in sd.items()}
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(v).astype(v.dtype.newbyteorder("="))) for k, v in arrays.items()})
    expected(tensors, out / "numpy.expected.safetensors")

    # A whole nn.Module pickled: refused by default, readable as opaque records.
    torch.save(torch.nn.Linear(3, 2), out / "module.pt")
    torch.save(torch.nn.Linear(3, 2), out / "module_legacy.pt", _use_new_zipfile_serialization=False)
    # A dict subclass from a user library (pickled with SETITEMS), likewise.
    with fake_module("mylib", AttrDict):
        torch.save({"model": AttrDict(w=torch.ones(2), lr=0.1)}, out / "attrdict.pt")


class AttrDict(dict):
    pass


@contextlib.contextmanager
def fake_module(name, cls):
    """Makes `cls` picklable as name.<cls> without a real module file."""
    module = types.ModuleType(name)
    setattr(module, cls.__name__, cls)
    cls.__module__ = name
    sys.modules[name] = module
    try:
        yield
    finally:
        del sys.modules[name]


def write_diffusers(out):
    try:
        from diffusers import UNet2DModel
    except Exception:  # diffusers is optional: the C++ test skips without the file
        return
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
    )
    folder = out / "diffusers_unet"
    unet.save_pretrained(str(folder), safe_serialization=False)
    expected(unet.state_dict(), out / "diffusers_unet.expected.safetensors")


# ---- malicious pickles -------------------------------------------------------


class Evil:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def unicode_op(s):
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def write_malicious(out):
    def marker(case):
        return str(out / f"PWNED_{case}")

    def touch(case):
        return f"touch '{marker(case)}'"

    def py_touch(case):
        return f"open({marker(case)!r}, 'w').close()"

    cases = {
        # name -> (pickle bytes, global the error must name)
        "reduce_os_system": (pickle.dumps(Evil(os.system, touch("reduce_os_system")), protocol=2), "posix.system"),
        "eval_stack_global": (pickle.dumps(Evil(builtins.eval, py_touch("eval_stack_global")), protocol=4), "builtins.eval"),
        "exec_global": (pickle.dumps(Evil(builtins.exec, py_touch("exec_global")), protocol=2), "builtins.exec"),
        "subprocess": (
            pickle.dumps(Evil(subprocess.check_call, ["touch", marker("subprocess")]), protocol=3),
            "subprocess.check_call",
        ),
        # Written by hand: GLOBAL naming os.system directly, INST and OBJ opcodes.
        "global_os_system": (
            b"\x80\x02cos\nsystem\n" + unicode_op(touch("global_os_system")) + b"\x85R.",
            "os.system",
        ),
        "inst": (b"(" + unicode_op(touch("inst")) + b"ios\nsystem\n.", "os.system"),
        "obj": (b"\x80\x02(cposix\nsystem\n" + unicode_op(touch("obj")) + b"o.", "posix.system"),
        # An allowed container with a payload deep inside it.
        "nested_in_dict": (
            pickle.dumps({"state_dict": {"w": Evil(os.system, touch("nested_in_dict"))}}, protocol=2),
            "posix.system",
        ),
    }
    for case, (data, name) in cases.items():
        (out / f"evil_{case}.pkl").write_bytes(data)
        (out / f"evil_{case}.global").write_text(name)

    # torch.save containers around a payload: a zip whose data.pkl runs os.system,
    # and the legacy format.
    torch.save({"w": torch.ones(2), "x": Evil(os.system, touch("torch_zip"))}, out / "evil_torch_zip.pt")
    (out / "evil_torch_zip.global").write_text("posix.system")
    torch.save(
        {"w": torch.ones(2), "x": Evil(os.system, touch("torch_legacy"))},
        out / "evil_torch_legacy.pt",
        _use_new_zipfile_serialization=False,
    )
    (out / "evil_torch_legacy.global").write_text("posix.system")
    # A hand-made zip whose data.pkl is a raw STACK_GLOBAL builtins.exec payload.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(builtins.exec, py_touch("handmade_zip")), protocol=4))
        z.writestr("archive/byteorder", "little")
    (out / "evil_handmade_zip.pt").write_bytes(buffer.getvalue())
    (out / "evil_handmade_zip.global").write_text("builtins.exec")


def check_payloads_are_live(out):
    """Python's own unpickler does run each payload (creates its marker), so the
    C++ test's "no marker" check means something."""
    for path in sorted(out.glob("evil_*")):
        case = path.stem[len("evil_"):]
        if path.suffix not in (".pkl", ".pt"):
            continue
        if path.suffix == ".pkl":
            pickle.loads(path.read_bytes())
        elif case == "handmade_zip":  # not a complete torch archive: unpickle its data.pkl
            with zipfile.ZipFile(path) as z:
                pickle.loads(z.read("archive/data.pkl"))
        else:
            torch.load(path, weights_only=False)
        assert (out / f"PWNED_{case}").exists(), f"payload {case} did not run in Python"


def generate(out):
    write_layouts(out)
    write_diffusers(out)
    write_malicious(out)
    check_payloads_are_live(out)
    for leftover in out.glob("PWNED_*"):  # no marker may exist before the C++ tests run
        leftover.unlink()


def rezip_zip64(src, dst):
    """The same archive with zip64 records, as for checkpoints over 4 GiB: the
    limits are lowered so that a small file needs them."""
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info.filename))
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
    with zipfile.ZipFile(dst) as z:  # zip64 end record and per-entry zip64 fields present
        assert z.read(z.namelist()[0])


def rezip_deflated(src, dst):
    """The same archive re-compressed, as a user's zip tool would write it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def write_big_endian(out):
    """A zip checkpoint as a big-endian machine writes it: byteorder "big" and
    every float32 storage byte-swapped (torch.load itself reads it back)."""
    g = torch.Generator().manual_seed(3)
    tensors = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    torch.save(tensors, out / "little.pt")
    with zipfile.ZipFile(out / "little.pt") as zin, zipfile.ZipFile(out / "big_endian.pt", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, dtype="<f4").astype(">f4").tobytes()
            zout.writestr(info.filename.replace("little/", "big_endian/"), data)
    (out / "little.pt").unlink()
    loaded = torch.load(out / "big_endian.pt")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    expected(tensors, out / "big_endian.expected.safetensors")
