"""A pass-through initialisation of the small AutoencoderKLCosmos: before any training, the tokenizer already encodes
the 8x8x8 block averages of R, G, B into latent channels 0-2 and decodes them back as flat blocks.

Why: trained from the default (random) initialisation the CV8x8x8 design first learns to reproduce the background
and leaves the small saturated objects grey for hundreds of steps (the first GPU run: 420 steps, PSNR 20.6 dB, every
object decoded as grey, colour presence 0 on the ground truth round trip). Started here, colour and position are
carried from step 0 and training only sharpens them.

How, with the architecture unchanged (the same modules, parameters and TorchScript export):
- every residual branch starts at zero (the last conv of each resnet block, the output projection of each attention,
  the strided / repeating convs of the down- and upsamplers), so the trunk is identity, average pooling (encoder:
  2x2 space, causal 2 time) and nearest repetition (decoder);
- channels are laid out as [+rgb, -rgb, constants +-K]: the per-frame GroupNorm (one group) then sees mean 0 and a
  variance dominated by the constants, i.e. it divides by a nearly content-independent number that its scale
  (gamma) undoes; its shift (beta) moves the colour into the almost linear part of SiLU, and the following conv
  takes it back out;
- the haar patcher's first sub-band is the 4x4x4 mean, so conv_in picks channels 0-2; the decoder's conv_out writes
  the same sub-band of its 192 outputs, which the inverse haar transform spreads over the 4x4x4 block;
- the pass-through convs are exact (no random part: a random weight reading the constants would shift the colour);
  the free latent channels 3-15 are random mixes of the colour channels in the encoder and feed the decoder's
  non-colour channels, so they get gradient and can learn what the block average misses. Everything else (the
  residual branches' inner convs, attention q/k/v, norms) keeps diffusers' default initialisation.
"""

from __future__ import annotations

import math

import torch

# K: magnitude of the constant carrier channels (larger: the GroupNorm divisor varies less with content, but any
# weight reading them shifts the colour more)
CONSTANT = 1.0
SHIFT = 3.0  # GroupNorm beta on the colour channels: SiLU is nearly linear around it
FREE_SCALE = 0.5  # x the default initialisation: weights that feed / read the free latent channels 3-15
COLOUR = 3


def _silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def _silu_slope(x: float) -> float:
    s = 1.0 / (1.0 + math.exp(-x))
    return s * (1.0 + x * (1.0 - s))


def _carrier_bias(channels: int, start: int = 2 * COLOUR) -> torch.Tensor:
    """Bias that puts +K, -K, +K, ... on channels [start, channels) (one 0 when their number is odd)."""
    bias = torch.zeros(channels)
    n = channels - start
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n - n % 2)])
    bias[start : start + len(signs)] = CONSTANT * signs
    return bias


def _identity_conv(conv: torch.nn.Conv3d, pairs: list[tuple[int, int, float]], bias: torch.Tensor | None,
                   tap: tuple[int, int, int]) -> None:
    """conv.weight = value at kernel position `tap` for each (out, in, value), zero elsewhere; bias as given."""
    conv.weight.zero_()
    for out_c, in_c, value in pairs:
        conv.weight[out_c, in_c, tap[0], tap[1], tap[2]] += value
    if conv.bias is not None:
        conv.bias.copy_(bias if bias is not None else torch.zeros_like(conv.bias))


def _last_tap(conv: torch.nn.Conv3d) -> tuple[int, int, int]:
    """The kernel position that reads the current frame at the centre pixel (causal time padding: last time tap)."""
    kt, kh, kw = conv.weight.shape[2:]
    return kt - 1, kh // 2, kw // 2


def _projection(proj: torch.nn.Module, pairs: list[tuple[int, int, float]], bias: torch.Tensor) -> None:
    """CosmosConvProjection3d (conv_s then conv_t): conv_s does the mapping + bias, conv_t is the identity."""
    _identity_conv(proj.conv_s, pairs, bias, _last_tap(proj.conv_s))
    n = proj.conv_t.weight.shape[0]
    _identity_conv(proj.conv_t, [(k, k, 1.0) for k in range(n)], None, _last_tap(proj.conv_t))


def _carrier_pairs(source: int = 0, sign_copy: bool = True) -> list[tuple[int, int, float]]:
    """+rgb on 0-2 and -rgb on 3-5 from input channels source..source+2."""
    pairs = [(k, source + k, 1.0) for k in range(COLOUR)]
    if sign_copy:
        pairs += [(COLOUR + k, source + k, -1.0) for k in range(COLOUR)]
    return pairs


def _zero_branches(module: torch.nn.Module) -> None:
    """Residual branches to zero (their other weights keep the default init), samplers to pooling / repetition."""
    from diffusers.models.autoencoders.autoencoder_kl_cosmos import (
        CosmosCausalAttention,
        CosmosDownsample3d,
        CosmosResnetBlock3d,
        CosmosUpsample3d,
    )

    for m in module.modules():
        if isinstance(m, CosmosResnetBlock3d):
            m.conv2.conv_t.weight.zero_()
            m.conv2.conv_t.bias.zero_()
            if isinstance(m.conv_shortcut, torch.nn.Conv3d):
                n_out, n_in = m.conv_shortcut.weight.shape[:2]
                pairs = [(k, k, 1.0) for k in range(min(n_in, n_out))]
                bias = torch.zeros(n_out)
                if n_out > n_in:  # new channels: more constants
                    bias[n_in:] = _carrier_bias(n_out - n_in, 0)
                _identity_conv(m.conv_shortcut, pairs, bias, (0, 0, 0))
        elif isinstance(m, CosmosCausalAttention):
            m.to_out[0].weight.zero_()
            m.to_out[0].bias.zero_()
        elif isinstance(m, (CosmosDownsample3d, CosmosUpsample3d)):
            for conv in (m.conv1, m.conv2):
                if isinstance(conv, torch.nn.Conv3d):
                    conv.weight.zero_()
                    conv.bias.zero_()
            if isinstance(m.conv3, torch.nn.Conv3d):
                n = m.conv3.weight.shape[0]
                _identity_conv(m.conv3, [(k, k, 1.0) for k in range(n)], None, (0, 0, 0))


def _free_channels(conv: torch.nn.Conv3d, rows: slice, cols: slice) -> None:
    """Random (FREE_SCALE x default bound) centre-tap weights from input channels `cols` to outputs `rows`."""
    fan_in = conv.weight.shape[1] * conv.weight[0, 0].numel()
    bound = FREE_SCALE / math.sqrt(fan_in)
    block = conv.weight[rows, cols]
    tap = _last_tap(conv)
    block[:, :, tap[0], tap[1], tap[2]] = torch.empty(block.shape[:2]).uniform_(-bound, bound)


def _norm_out(norm: torch.nn.Module, channels: int) -> float:
    """GroupNorm scale/shift that turn the colour channels c into c + SHIFT; returns the assumed frame std."""
    sigma = math.sqrt(((channels - 2 * COLOUR) // 2 * 2) * CONSTANT**2 / channels)
    gn = norm.norm
    gn.weight.fill_(1.0)
    gn.bias.zero_()
    gn.weight[:COLOUR] = sigma
    gn.bias[:COLOUR] = SHIFT
    return sigma


def _colour_out(norm: torch.nn.Module, conv_out: torch.nn.Module) -> None:
    """norm_out + SiLU + conv_out: the colour channels (shifted by the norm into SiLU's near-linear part) back out
    unshifted on output channels 0-2 of conv_out, its other outputs zero."""
    slope, offset = _silu_slope(SHIFT), _silu(SHIFT)
    _norm_out(norm, conv_out.conv_s.weight.shape[1])
    bias = torch.zeros(conv_out.conv_s.weight.shape[0])
    bias[:COLOUR] = -offset / slope
    _projection(conv_out, [(k, k, 1.0 / slope) for k in range(COLOUR)], bias)


@torch.no_grad()
def pass_through_init(vae: torch.nn.Module) -> torch.nn.Module:
    """Initialise an AutoencoderKLCosmos (haar patch 4, CV8x8x8 layout) in place; returns it."""
    enc, dec = vae.encoder, vae.decoder
    if enc.patch_embed.patch_method != "haar" or enc.patch_embed.patch_size != 4:
        raise ValueError("pass_through_init expects the CV8x8x8 haar patching (patch size 4)")

    # encoder: haar mean sub-band (channels 0-2) -> [+rgb, -rgb, constants] -> ... -> latent channels 0-2
    c0 = enc.conv_in.conv_s.weight.shape[0]
    _projection(enc.conv_in, _carrier_pairs(0), _carrier_bias(c0))
    _zero_branches(enc)
    _colour_out(enc.norm_out, enc.conv_out)
    latent = enc.conv_out.conv_s.weight.shape[0]
    _free_channels(enc.conv_out.conv_s, rows=slice(COLOUR, latent), cols=slice(0, 2 * COLOUR))
    _identity_conv(vae.quant_conv, [(k, k, 1.0) for k in range(latent)], None, (0, 0, 0))

    # decoder: latent channels 0-2 -> [+rgb, -rgb, constants] -> ... -> the mean sub-band of the 192 outputs
    _identity_conv(vae.post_quant_conv, [(k, k, 1.0) for k in range(latent)], None, (0, 0, 0))
    d0 = dec.conv_in.conv_s.weight.shape[0]
    _projection(dec.conv_in, _carrier_pairs(0), _carrier_bias(d0))
    _free_channels(dec.conv_in.conv_s, rows=slice(2 * COLOUR, d0), cols=slice(COLOUR, latent))
    _zero_branches(dec)
    _colour_out(dec.norm_out, dec.conv_out)
    return vae
