"""ADM U-Nets assembled from deepinv's DiffUNet building blocks in small configs,
random weights; saves the state dict, config, inputs and ε outputs."""
import json

import torch
from torch import nn
from safetensors.torch import save_file
from deepinv.models.diffunet import (AttentionBlock, DiffUNet, Downsample, ResBlock,
                                     TimestepEmbedSequential, Upsample, normalization)

CONFIGS = {
    # legacy attention with a fixed head count, scale-shift norm, resblock up/down
    "updown_legacy": dict(image_size=32, in_channels=3, model_channels=32, out_channels=6,
                          num_res_blocks=1, attention_resolutions=[8], dropout=0.0,
                          channel_mult=[1, 2, 2], conv_resample=True, num_classes=0,
                          num_heads=4, num_head_channels=-1, num_heads_upsample=-1,
                          use_scale_shift_norm=True, resblock_updown=True,
                          use_new_attention_order=False),
    # new attention order, head channels, conv resampling, additive embedding, classes
    "conv_new_classes": dict(image_size=16, in_channels=3, model_channels=32, out_channels=3,
                             num_res_blocks=2, attention_resolutions=[16, 8], dropout=0.1,
                             channel_mult=[1, 2], conv_resample=True, num_classes=10,
                             num_heads=1, num_head_channels=16, num_heads_upsample=-1,
                             use_scale_shift_norm=False, resblock_updown=False,
                             use_new_attention_order=True),
    # the published checkpoints' conventions (legacy attention, 64-style head
    # channels, learn_sigma), saved by torch.save(state_dict) as they are
    "published_style": dict(image_size=32, in_channels=3, model_channels=32, out_channels=6,
                            num_res_blocks=1, attention_resolutions=[8], dropout=0.0,
                            channel_mult=[1, 2, 2], conv_resample=True, num_classes=0,
                            num_heads=4, num_head_channels=16, num_heads_upsample=-1,
                            use_scale_shift_norm=True, resblock_updown=True,
                            use_new_attention_order=False),
}


def build(cfg):
    """The guided-diffusion layout, assembled from deepinv's blocks; DiffUNet's
    forward_diffusion is the reference forward."""
    m = DiffUNet.__new__(DiffUNet)
    nn.Module.__init__(m)
    mc, emb = cfg["model_channels"], 4 * cfg["model_channels"]
    att = {cfg["image_size"] // r for r in cfg["attention_resolutions"]}
    heads_up = cfg["num_heads_upsample"] if cfg["num_heads_upsample"] != -1 else cfg["num_heads"]
    m.model_channels, m.num_classes, m.dtype = mc, cfg["num_classes"] or None, torch.float32
    res = lambda i, o, **kw: ResBlock(i, emb, cfg["dropout"], out_channels=o,
                                      use_scale_shift_norm=cfg["use_scale_shift_norm"], **kw)
    attn = lambda c, h: AttentionBlock(c, num_heads=h, num_head_channels=cfg["num_head_channels"],
                                       use_new_attention_order=cfg["use_new_attention_order"])
    m.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
    if m.num_classes:
        m.label_emb = nn.Embedding(m.num_classes, emb)
    ch = cfg["channel_mult"][0] * mc
    m.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg["in_channels"], ch, 3, padding=1))])
    chans, ds = [ch], 1
    for level, mult in enumerate(cfg["channel_mult"]):
        for _ in range(cfg["num_res_blocks"]):
            layers = [res(ch, mult * mc)]
            ch = mult * mc
            if ds in att:
                layers.append(attn(ch, cfg["num_heads"]))
            m.input_blocks.append(TimestepEmbedSequential(*layers))
            chans.append(ch)
        if level != len(cfg["channel_mult"]) - 1:
            down = res(ch, ch, down=True) if cfg["resblock_updown"] else Downsample(ch, cfg["conv_resample"], out_channels=ch)
            m.input_blocks.append(TimestepEmbedSequential(down))
            chans.append(ch)
            ds *= 2
    m.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg["num_heads"]), res(ch, ch))
    m.output_blocks = nn.ModuleList()
    for level, mult in list(enumerate(cfg["channel_mult"]))[::-1]:
        for i in range(cfg["num_res_blocks"] + 1):
            layers = [res(ch + chans.pop(), mult * mc)]
            ch = mult * mc
            if ds in att:
                layers.append(attn(ch, heads_up))
            if level and i == cfg["num_res_blocks"]:
                layers.append(res(ch, ch, up=True) if cfg["resblock_updown"] else Upsample(ch, cfg["conv_resample"], out_channels=ch))
                ds //= 2
            m.output_blocks.append(TimestepEmbedSequential(*layers))
    m.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, cfg["out_channels"], 3, padding=1))
    return m


def generate(out):
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        model = build(cfg).eval()
        with torch.no_grad():  # zero-initialised output convs would hide errors
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
            for mod in model.modules():
                if isinstance(mod, nn.GroupNorm):
                    mod.weight.add_(1.0)
        n = 2
        x = torch.randn(n, cfg["in_channels"], cfg["image_size"], cfg["image_size"])
        t = torch.tensor([10.0, 870.0])
        y = torch.tensor([3, 7]) if cfg["num_classes"] else None
        with torch.no_grad():
            eps = model.forward_diffusion(x, t, y=y)
        tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
        tensors.update(x=x, t=t, out=eps)
        if y is not None:
            tensors["labels"] = y
        save_file(tensors, str(out / f"{name}.safetensors"), metadata={"config": json.dumps(cfg)})
        torch.save(model.state_dict(), out / f"{name}.pt")
