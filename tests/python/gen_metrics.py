"""Image-quality metrics on fixed images: the oracle for tests/cpp/test_metrics.cpp.

- SSIM: scikit-image's structural_similarity (Gaussian window σ = 1.5,
  population covariances, data range 1, the 5-pixel border cropped), checked
  here against torchmetrics' SSIM map cropped the same way.
- LPIPS: the `lpips` package on randomly initialised torchvision backbones
  (saved as torchvision's model-zoo files are: the whole classifier's state
  dict) and the package's own linear heads (copied byte for byte).
- FID/KID: pytorch-fid's FID-Inception with random weights (saved like
  pt_inception-2015-12-05-6726825d.pth: legacy torch.save, fc included, no
  num_batches_tracked), its pool features, pytorch-fid's Fréchet distance and
  torchmetrics' polynomial-kernel MMD.
- Posterior statistics: numpy's sample std and central credible intervals.

Nothing is downloaded: every network is built with random weights.
"""
import shutil

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from skimage import data
from skimage.metrics import structural_similarity

import lpips
import pytorch_fid.inception as fid_inception
from pytorch_fid.fid_score import calculate_frechet_distance
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd


def _save(path, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))


def _test_images(g):
    """Three 64×64 astronaut crops (reference) and degraded versions (prediction)."""
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    photo = F.avg_pool2d(photo, 4)  # 128×128
    ref = torch.cat([photo[..., 10:74, 20:84], photo[..., 50:114, 40:104], photo[..., 0:64, 64:128]])
    blurred = F.avg_pool2d(F.pad(ref[1:2], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pred = torch.cat([
        (ref[0:1] + 0.05 * torch.randn(1, 3, 64, 64, generator=g)).clamp(0, 1),
        blurred,
        (ref[2:3] * 0.8 + 0.1).clamp(0, 1),
    ])
    return ref.contiguous(), pred.contiguous()


def _ssim_refs(out, ref, pred, g):
    cases = {"rgb": (ref, pred)}
    gray_ref = torch.rand(2, 1, 40, 57, generator=g)
    cases["gray"] = (gray_ref, (gray_ref + 0.1 * torch.randn(2, 1, 40, 57, generator=g)).clamp(0, 1))
    tensors = {}
    for name, (r, p) in cases.items():
        values = [structural_similarity(p[i].double().numpy(), r[i].double().numpy(), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
                  for i in range(r.shape[0])]
        # torchmetrics (1.9) averages its map over the whole reflect-padded image;
        # cropped to the pixels the window covers, as scikit-image does, the two agree.
        _, full = structural_similarity_index_measure(p.double(), r.double(), data_range=1.0, reduction="none",
                                                      return_full_image=True)
        assert np.allclose(values, full[..., 5:-5, 5:-5].mean((1, 2, 3)).numpy(), rtol=1e-6), values
        tensors.update({f"{name}_ref": r, f"{name}_pred": p, f"{name}_ssim": torch.tensor(values)})
    _save(out / "ssim.safetensors", tensors)


def _random_trunk(build):
    """Seeded random weights for a torchvision ImageNet model's `features`, and
    the model's state dict as the model zoo saves it. The classifier is never
    read by LPIPS, so it is built on the meta device (no time spent on VGG's
    120 M classifier weights) and saved as stride-0 views: the real names and
    shapes in a few bytes."""
    with torch.device("meta"):
        zoo = build(weights=None)
    zoo.features.to_empty(device="cpu")
    for m in zoo.features.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    return {k: (torch.zeros(1).expand(v.shape) if k.startswith("classifier.") else v)
            for k, v in zoo.state_dict().items()}


def _lpips_model(net, state, heads_file):
    """lpips.LPIPS with the given trunk and heads, built without initialising (or
    downloading) the torchvision model it wraps."""
    with torch.device("meta"):
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    model.to_empty(device="cpu")
    model.scaling_layer = lpips.lpips.ScalingLayer()  # its constants do not survive to_empty
    # lpips slices torchvision's `features` into slice1..sliceK keeping the indices.
    model.net.load_state_dict({name: state["features." + name.split(".", 1)[1]]
                               for name in model.net.state_dict()})
    model.load_state_dict(torch.load(heads_file, map_location="cpu"), strict=False)  # as lpips loads them
    return model.eval()


def _lpips_refs(out, ref, pred):
    backbones = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16,
                 "squeeze": torchvision.models.squeezenet1_1}
    tensors = {"ref": ref, "pred": pred}
    for net, build in backbones.items():
        torch.manual_seed(0)
        state = _random_trunk(build)
        # The 2018 model-zoo files are legacy torch.save; also cover the zip format.
        torch.save(state, out / f"{net}_backbone.pth", _use_new_zipfile_serialization=(net == "vgg"))
        heads = f"{lpips.__path__[0]}/weights/v0.1/{net}.pth"
        shutil.copyfile(heads, out / f"{net}_heads.pth")
        model = _lpips_model(net, state, heads)
        with torch.no_grad():
            tensors[f"{net}_lpips"] = model(pred, ref, normalize=True).flatten()
    _save(out / "lpips.safetensors", tensors)


def _random_fid_inception():
    """pytorch-fid's FID-Inception (fid_inception_v3 without its download), random
    weights, BatchNorm statistics taken from a batch so activations stay O(1)."""
    net = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = 1.0  # the running statistics become those of the next batch
        net.train()
        net(torch.rand(1, 3, 299, 299) * 2 - 1)
    return net.eval()


def _fid_torchmetrics(x, y):
    return _compute_fid(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))


def _fid_refs(out, ref, pred, g):
    torch.manual_seed(0)
    net = _random_fid_inception()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, out / "pt_inception.pth", _use_new_zipfile_serialization=False)
    fid_inception.fid_inception_v3 = lambda: net  # InceptionV3 builds the pool-feature network from it
    model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    images = torch.cat([ref, pred])
    with torch.no_grad():
        feats = model(images)[0].flatten(1)

    # The distances on features of a size where covariances are full rank.
    a = torch.randn(200, 16, generator=g, dtype=torch.float64)
    b = torch.randn(150, 16, generator=g, dtype=torch.float64) @ (torch.eye(16) + 0.3 * torch.randn(16, 16, generator=g)).double() + 0.5

    def fid(x, y):
        x, y = x.double().numpy(), y.double().numpy()
        return calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))

    _save(out / "fid.safetensors", {
        "images": images, "features": feats,
        "feat_a": a, "feat_b": b,
        "fid_ab": torch.tensor([fid(a, b)], dtype=torch.float64),
        "kid_ab": poly_mmd(a[:150], b).reshape(1).double(),  # equal sizes: one exact evaluation
        # Fewer rows than dimensions: singular covariances, where pytorch-fid's
        # sqrtm is unreliable; torchmetrics' eigenvalues of Σc Σd in float64 are
        # accurate here (the spurious zero eigenvalues add ~1e-8).
        "feat_c": a[:12].clone(), "feat_d": b[:14].clone(),
        "fid_cd": _fid_torchmetrics(a[:12], b[:14]).reshape(1),
        # Three images cannot give full-rank 2048×2048 covariances; pytorch-fid's
        # sqrtm refuses them, torchmetrics' eigenvalue route still gives a value.
        "fid_images_torchmetrics": _fid_torchmetrics(feats[:3].double(), feats[3:].double()).reshape(1),
        "kid_images": poly_mmd(feats[:3].double(), feats[3:].double()).reshape(1),
    })


def _posterior_refs(out, g):
    samples = torch.randn(16, 2, 3, 8, 8, generator=g, dtype=torch.float64)
    reference = 1.2 * torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    s, r = samples.numpy(), reference.numpy()
    tensors = {"samples": samples, "reference": reference,
               "std": torch.from_numpy(s.std(axis=0, ddof=1))}
    for q in (0.5, 0.9):
        lo, hi = np.quantile(s, [(1 - q) / 2, (1 + q) / 2], axis=0)  # linear interpolation
        tensors[f"coverage_{int(q * 100)}"] = torch.tensor([((r >= lo) & (r <= hi)).mean()], dtype=torch.float64)
    _save(out / "posterior.safetensors", tensors)


def generate(out):
    g = torch.Generator().manual_seed(2024)
    ref, pred = _test_images(g)
    _ssim_refs(out, ref, pred, g)
    _lpips_refs(out, ref, pred)
    _fid_refs(out, ref, pred, g)
    _posterior_refs(out, g)
