"""DDPM checkpoints as pesser's pytorch_diffusion publishes Ho et al.'s models
(model-*.ckpt: a torch.save'd state dict with names such as temb.dense.0.weight,
down.0.block.0.conv1.weight, mid.attn_1.q.weight, up.1.upsample.conv.weight),
with the ε of diffusers' UNet2DModel on the same weights as the reference.

The names come from a small re-statement of pytorch_diffusion's Model (below);
the diffusers weights are renamed into it by a mapping written here, and the
two networks are checked to agree before anything is saved.
"""
import math
import re

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import save_file
from torch import nn

CONFIGS = {
    # three levels, attention in the middle one, 2 blocks: channel changes need nin_shortcut
    "lsun_like": dict(block_out_channels=(32, 64, 64), attention=(False, True, False), layers=2, legacy=False),
    # the checkpoints of 2020 were written in torch's legacy (pre-zip) format
    "cifar_like": dict(block_out_channels=(32, 64), attention=(True, True), layers=1, legacy=True),
}


# --- pytorch_diffusion's U-Net, as its module names and forward pass describe it ---

def group_norm(channels):
    return nn.GroupNorm(32, channels, eps=1e-6)


def conv3(cin, cout, stride=1, padding=1):
    return nn.Conv2d(cin, cout, 3, stride, padding)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), conv3(cin, cout)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2, self.conv2 = group_norm(cout), conv3(cout, cout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(b, c, hh * ww) for f in (self.q, self.k, self.v))
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=2)  # query i, key j
        return x + self.proj_out(torch.einsum("bcj,bij->bci", v, weights).reshape(b, c, hh, ww))


class PesserUNet(nn.Module):
    def __init__(self, block_out_channels, attention, layers, in_channels=3, out_channels=3):
        super().__init__()
        ch = block_out_channels[0]
        self.ch = ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, 4 * ch), nn.Linear(4 * ch, 4 * ch)])
        self.conv_in = conv3(in_channels, ch)
        skips, cur = [ch], ch  # channels of every tensor the down path keeps
        self.down = nn.ModuleList()
        for level, out in enumerate(block_out_channels):
            d = nn.Module()
            d.block, d.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(layers):
                d.block.append(ResnetBlock(cur, out, 4 * ch))
                cur = out
                if attention[level]:
                    d.attn.append(AttnBlock(cur))
                skips.append(cur)
            if level < len(block_out_channels) - 1:
                d.downsample = nn.Module()
                d.downsample.conv = conv3(cur, cur, stride=2, padding=0)
                skips.append(cur)
            self.down.append(d)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1 = ResnetBlock(cur, cur, 4 * ch), AttnBlock(cur)
        self.mid.block_2 = ResnetBlock(cur, cur, 4 * ch)
        up = [None] * len(block_out_channels)
        for level in reversed(range(len(block_out_channels))):  # built and run coarsest first, indexed by level
            u = nn.Module()
            u.block, u.attn = nn.ModuleList(), nn.ModuleList()
            out = block_out_channels[level]
            for _ in range(layers + 1):
                u.block.append(ResnetBlock(cur + skips.pop(), out, 4 * ch))
                cur = out
                if attention[level]:
                    u.attn.append(AttnBlock(cur))
            if level > 0:
                u.upsample = nn.Module()
                u.upsample.conv = conv3(cur, cur)
            up[level] = u
        self.up = nn.ModuleList(up)
        self.norm_out, self.conv_out = group_norm(cur), conv3(cur, out_channels)

    def forward(self, x, t):
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - 1))
        args = t.float()[:, None] * freqs[None]
        temb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))
        hs = [self.conv_in(x)]
        for d in self.down:
            for i, block in enumerate(d.block):
                h = block(hs[-1], temb)
                hs.append(d.attn[i](h) if len(d.attn) else h)
            if hasattr(d, "downsample"):
                hs.append(d.downsample.conv(F.pad(hs[-1], (0, 1, 0, 1))))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for u in reversed(self.up):
            for i, block in enumerate(u.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(u.attn):
                    h = u.attn[i](h)
            if hasattr(u, "upsample"):
                h = u.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# --- diffusers UNet2DModel name -> pytorch_diffusion name ---

def pesser_name(name, levels):
    rules = [
        (r"^time_embedding\.linear_([12])\.", lambda m: f"temb.dense.{int(m[1]) - 1}."),
        (r"^conv_norm_out\.", lambda m: "norm_out."),
        (r"^mid_block\.resnets\.([01])\.", lambda m: f"mid.block_{int(m[1]) + 1}."),
        (r"^mid_block\.attentions\.0\.", lambda m: "mid.attn_1."),
        (r"^down_blocks\.(\d+)\.", lambda m: f"down.{m[1]}."),
        (r"^up_blocks\.(\d+)\.", lambda m: f"up.{levels - 1 - int(m[1])}."),
        (r"\.resnets\.", lambda m: ".block."),
        (r"\.attentions\.", lambda m: ".attn."),
        (r"\.(down|up)samplers\.0\.conv\.", lambda m: f".{m[1]}sample.conv."),
        (r"\.time_emb_proj\.", lambda m: ".temb_proj."),
        (r"\.conv_shortcut\.", lambda m: ".nin_shortcut."),
        (r"\.group_norm\.", lambda m: ".norm."),
        (r"\.to_([qkv])\.", lambda m: f".{m[1]}."),
        (r"\.to_out\.0\.", lambda m: ".proj_out."),
    ]
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def to_pesser(state, levels):
    out = {}
    for name, value in state.items():
        new = pesser_name(name, levels)
        if re.search(r"\.(q|k|v|proj_out)\.weight$", new):
            value = value[:, :, None, None]  # linear -> 1x1 convolution
        out[new] = value.clone()
    return out


def generate(out):
    for name, cfg in CONFIGS.items():
        torch.manual_seed(1)
        levels = len(cfg["block_out_channels"])
        model = UNet2DModel(
            sample_size=16, block_out_channels=cfg["block_out_channels"], layers_per_block=cfg["layers"],
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg["attention"]),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg["attention"])),
            norm_eps=1e-6, freq_shift=1, flip_sin_to_cos=False, downsample_padding=0,
            attention_head_dim=None).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        state = to_pesser(model.state_dict(), levels)
        pesser = PesserUNet(cfg["block_out_channels"], cfg["attention"], cfg["layers"]).eval()
        pesser.load_state_dict(state, strict=True)  # the mapping reaches every name, and only those

        x = torch.randn(2, 3, 16, 16)
        t = torch.tensor([3, 650])
        with torch.no_grad():
            eps = model(x, t).sample
            err = ((pesser(x, t) - eps).abs().max() / eps.abs().max()).item()
        assert err < 1e-5, f"{name}: the pytorch_diffusion network differs from diffusers by {err}"

        folder = out / name
        folder.mkdir(exist_ok=True)
        torch.save(state, folder / "model-1000.ckpt", _use_new_zipfile_serialization=not cfg["legacy"])
        save_file({"x": x, "t": t, "out": eps.contiguous()}, str(folder / "io.safetensors"))
